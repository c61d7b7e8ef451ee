//! The runtime options containerd passes with `Create`: for runtimes other
//! than runc it sends `runtimeoptions.v1.Options` (`ConfigPath` in a
//! containerd `runtimes.<name>.options` table, `ctr run
//! --runtime-config-path`), naming our node config file.

use std::path::PathBuf;

use containerd_shim_protos::protobuf::rt::WireType;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::CodedInputStream;

use crate::error::{Error, Result};

const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
/// `config_path`'s field number in `runtimeoptions.v1.Options`.
const CONFIG_PATH_FIELD: u32 = 2;

/// The node config file the options name, if any. Options of other types
/// are not ours to read and are ignored.
pub(crate) fn config_path(options: Option<&Any>) -> Result<Option<PathBuf>> {
    let Some(any) = options.filter(|any| any.type_url.ends_with(RUNTIME_OPTIONS)) else {
        return Ok(None);
    };
    let malformed = |e: containerd_shim_protos::protobuf::Error| {
        Error::InvalidArgument(format!("{RUNTIME_OPTIONS}: {e}"))
    };
    let mut input = CodedInputStream::from_bytes(&any.value);
    let mut path = None;
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(malformed)? {
        let wire_type = WireType::new(tag & 7)
            .ok_or_else(|| Error::InvalidArgument(format!("{RUNTIME_OPTIONS}: bad wire type")))?;
        if tag >> 3 == CONFIG_PATH_FIELD && wire_type == WireType::LengthDelimited {
            path = Some(input.read_string().map_err(malformed)?);
        } else {
            input.skip_field(wire_type).map_err(malformed)?;
        }
    }
    Ok(path.filter(|p| !p.is_empty()).map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use containerd_shim_protos::protobuf::CodedOutputStream;

    use super::*;

    fn options(type_url: &str, fields: &[(u32, &str)]) -> Any {
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            for (field, text) in fields {
                out.write_string(*field, text).unwrap();
            }
            out.flush().unwrap();
        }
        Any {
            type_url: type_url.into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn reads_the_config_path_of_runtime_options() {
        let any = options(
            "type.googleapis.com/runtimeoptions.v1.Options",
            &[(1, "io.containerd.diffkeeper.v1"), (2, "/etc/dk/node.toml")],
        );
        assert_eq!(
            config_path(Some(&any)).unwrap(),
            Some(PathBuf::from("/etc/dk/node.toml"))
        );
        let runc = options("containerd.runc.v1.Options", &[(2, "/x")]);
        assert_eq!(config_path(Some(&runc)).unwrap(), None);
        assert_eq!(config_path(None).unwrap(), None);
        let broken = Any {
            type_url: RUNTIME_OPTIONS.into(),
            value: vec![0x12, 0x40, b'x'],
            ..Default::default()
        };
        assert!(config_path(Some(&broken)).is_err());
    }
}
