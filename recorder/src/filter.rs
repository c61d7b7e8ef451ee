//! Which paths are recorded.

use diffkeeper_store::{PathGlobs, RecPath};

/// Include and exclude globs over recorded paths (see [`PathGlobs`]). A
/// path is recorded when it matches an include glob and no exclude glob.
#[derive(Clone, Debug)]
pub struct PathFilter {
    include: PathGlobs,
    exclude: PathGlobs,
}

impl PathFilter {
    pub fn new<S: AsRef<str>>(
        include: &[S],
        exclude: &[S],
    ) -> diffkeeper_store::Result<PathFilter> {
        Ok(PathFilter {
            include: PathGlobs::new(include)?,
            exclude: PathGlobs::new(exclude)?,
        })
    }

    /// Whether `path` (a directory) is excluded, so nothing below it can be
    /// recorded and a scan need not enter it.
    pub fn excludes(&self, path: &RecPath) -> bool {
        self.exclude.matches(path)
    }

    pub fn accepts(&self, path: &RecPath) -> bool {
        self.include.matches(path) && !self.exclude.matches(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_then_exclude() {
        let filter = PathFilter::new(&["/app/**", "/etc/*.conf"], &["/app/cache/**"]).unwrap();
        let ok = |p: &str| filter.accepts(&RecPath::new(p).unwrap());
        assert!(ok("/app/data/x") && ok("/app") && ok("/etc/a.conf"));
        assert!(
            !ok("/etc/sub/a.conf") && !ok("/app/cache/y") && !ok("/app/cache") && !ok("/var/x")
        );
    }
}
