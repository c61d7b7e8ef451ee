//! Binary delta engines: zstd with the previous version as a reference
//! prefix, and bsdiff (qbsdiff). Both are only used on small files (the
//! encoder chunks large ones), where bsdiff's ~17n memory is harmless.

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx};

use super::PatchEngine;

const ZSTD_PATCH_LEVEL: i32 = 3;
/// The window must cover base + target for matches into the base; 2^27 is
/// the largest window a default zstd decoder accepts.
const ZSTD_MIN_WINDOW_LOG: u32 = 10;
const ZSTD_MAX_WINDOW_LOG: u32 = 27;

/// Computes a patch turning `base` into `target`.
pub(crate) fn diff(engine: PatchEngine, base: &[u8], target: &[u8]) -> Result<Vec<u8>, String> {
    match engine {
        PatchEngine::ZstdPrefix => zstd_diff(base, target),
        PatchEngine::Bsdiff => {
            let mut patch = Vec::new();
            qbsdiff::Bsdiff::new(base, target)
                .compare(&mut patch)
                .map_err(|e| format!("bsdiff: {e}"))?;
            Ok(patch)
        }
    }
}

/// Applies a patch; the result must be exactly `size` bytes.
pub(crate) fn apply(
    engine: PatchEngine,
    base: &[u8],
    patch: &[u8],
    size: u64,
) -> Result<Vec<u8>, String> {
    let out = match engine {
        PatchEngine::ZstdPrefix => zstd_apply(base, patch, size)?,
        PatchEngine::Bsdiff => {
            let patcher = qbsdiff::Bspatch::new(patch).map_err(|e| format!("bspatch: {e}"))?;
            if patcher.hint_target_size() != size {
                return Err("bsdiff patch produces the wrong size".into());
            }
            let mut out = Vec::with_capacity(size as usize);
            patcher
                .apply(base, &mut out)
                .map_err(|e| format!("bspatch: {e}"))?;
            out
        }
    };
    if out.len() as u64 != size {
        return Err(format!(
            "patch produced {} bytes, expected {size}",
            out.len()
        ));
    }
    Ok(out)
}

fn zstd_diff(base: &[u8], target: &[u8]) -> Result<Vec<u8>, String> {
    let err = |code| format!("zstd: {}", zstd_safe::get_error_name(code));
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(ZSTD_PATCH_LEVEL))
        .map_err(err)?;
    let span = (base.len() + target.len()).max(1) as u64;
    let window_log =
        (64 - (span - 1).leading_zeros()).clamp(ZSTD_MIN_WINDOW_LOG, ZSTD_MAX_WINDOW_LOG);
    cctx.set_parameter(CParameter::WindowLog(window_log))
        .map_err(err)?;
    cctx.ref_prefix(base).map_err(err)?;
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(target.len()));
    cctx.compress2(&mut out, target).map_err(err)?;
    Ok(out)
}

fn zstd_apply(base: &[u8], patch: &[u8], size: u64) -> Result<Vec<u8>, String> {
    let err = |code| format!("zstd: {}", zstd_safe::get_error_name(code));
    let mut dctx = DCtx::create();
    dctx.ref_prefix(base).map_err(err)?;
    // One byte of slack so an over-long frame is detected, not truncated.
    let mut out = Vec::with_capacity(size as usize + 1);
    dctx.decompress(&mut out, patch).map_err(err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_engines_round_trip() {
        let base: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut target = base.clone();
        target[5_000..5_010].copy_from_slice(b"0123456789");
        target.extend_from_slice(b"tail");
        for engine in [PatchEngine::ZstdPrefix, PatchEngine::Bsdiff] {
            let patch = diff(engine, &base, &target).unwrap();
            assert!(
                patch.len() < 1_000,
                "{engine:?} patch is {} bytes",
                patch.len()
            );
            let rebuilt = apply(engine, &base, &patch, target.len() as u64).unwrap();
            assert_eq!(rebuilt, target);
            assert!(apply(engine, &base, &patch, target.len() as u64 - 1).is_err());
        }
    }
}
