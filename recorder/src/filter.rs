//! Which paths are recorded.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use diffkeeper_store::RecPath;

/// Include and exclude globs over recorded paths (`*` stays within a
/// directory, `**` crosses `/`). A path is recorded when it matches an
/// include glob and no exclude glob.
#[derive(Clone, Debug)]
pub struct PathFilter {
    include: GlobSet,
    exclude: GlobSet,
}

impl PathFilter {
    pub fn new<S: AsRef<str>>(include: &[S], exclude: &[S]) -> Result<PathFilter, globset::Error> {
        Ok(PathFilter {
            include: set(include)?,
            exclude: set(exclude)?,
        })
    }

    /// Whether `path` (a directory) is excluded, so nothing below it can be
    /// recorded and a scan need not enter it.
    pub fn excludes(&self, path: &RecPath) -> bool {
        self.exclude.is_match(path.to_string_lossy())
    }

    pub fn accepts(&self, path: &RecPath) -> bool {
        let text = path.to_string_lossy();
        self.include.is_match(&text) && !self.exclude.is_match(&text)
    }
}

fn set<S: AsRef<str>>(globs: &[S]) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        // `/dir/**` should also match `/dir` itself.
        let pattern = glob.as_ref();
        builder.add(GlobBuilder::new(pattern).literal_separator(true).build()?);
        if let Some(dir) = pattern.strip_suffix("/**") {
            if !dir.is_empty() {
                builder.add(GlobBuilder::new(dir).literal_separator(true).build()?);
            }
        }
    }
    builder.build()
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
