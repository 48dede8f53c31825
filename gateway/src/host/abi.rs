//! Reads what a plugin is before anything runs: encoding, ABI section.

use super::InvalidPlugin;

/// ABI versions of `plugin-sdk` this gateway loads.
pub const SUPPORTED_ABI: std::ops::RangeInclusive<u32> = 1..=2;
/// The custom section `plugin-sdk` writes the ABI version into.
pub const ABI_SECTION: &str = "gateway-abi";

/// Checks the binary header: a component, not a core module or junk.
pub fn check_header(bytes: &[u8]) -> Result<(), InvalidPlugin> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(InvalidPlugin::NotWasm);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    match (version, layer) {
        (1, 0) => Err(InvalidPlugin::CoreModule),
        (_, 1) => Ok(()),
        _ => Err(InvalidPlugin::UnknownEncoding { version, layer }),
    }
}

/// The custom section the SDK writes a service's ABI version into.
pub const SERVICE_ABI_SECTION: &str = "gateway-service-abi";
/// ABI versions of the service world this gateway loads.
pub const SUPPORTED_SERVICE_ABI: std::ops::RangeInclusive<u32> = 1..=1;

/// The ABI version from the plugin's `gateway-abi` section (searched in the
/// component and the core modules nested in it).
pub fn abi_version(bytes: &[u8]) -> Result<u32, InvalidPlugin> {
    section_version(bytes, ABI_SECTION, &SUPPORTED_ABI, "export_connector!")
}

/// The service ABI version from the `gateway-service-abi` section.
pub fn service_abi_version(bytes: &[u8]) -> Result<u32, InvalidPlugin> {
    section_version(
        bytes,
        SERVICE_ABI_SECTION,
        &SUPPORTED_SERVICE_ABI,
        "export_service!",
    )
}

fn section_version(
    bytes: &[u8],
    name: &str,
    supported: &std::ops::RangeInclusive<u32>,
    macro_name: &str,
) -> Result<u32, InvalidPlugin> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| InvalidPlugin::Compile(e.to_string()))?;
        if let wasmparser::Payload::CustomSection(section) = payload {
            if section.name() == name {
                let data: [u8; 4] = section.data().try_into().map_err(|_| {
                    InvalidPlugin::Abi(format!(
                        "the {name} section must hold 4 bytes, it holds {}",
                        section.data().len()
                    ))
                })?;
                let version = u32::from_le_bytes(data);
                if !supported.contains(&version) {
                    return Err(InvalidPlugin::Abi(format!(
                        "plugin ABI version {version} is not supported; this gateway loads ABI {}..={}",
                        supported.start(),
                        supported.end()
                    )));
                }
                return Ok(version);
            }
        }
    }
    Err(InvalidPlugin::Abi(format!(
        "no {name} section: build the plugin with plugin-sdk's {macro_name} \
         (this gateway loads ABI {}..={})",
        supported.start(),
        supported.end()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(InvalidPlugin::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(InvalidPlugin::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn abi_sections_are_read_and_checked() {
        let with = |data: &[u8]| {
            let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
            let name = ABI_SECTION.as_bytes();
            bytes.push(0); // custom section id
            bytes.push((1 + name.len() + data.len()) as u8);
            bytes.push(name.len() as u8);
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(data);
            bytes
        };
        assert_eq!(abi_version(&with(&1u32.to_le_bytes())).unwrap(), 1);
        assert_eq!(abi_version(&with(&2u32.to_le_bytes())).unwrap(), 2);
        let too_new = abi_version(&with(&3u32.to_le_bytes()))
            .unwrap_err()
            .to_string();
        assert!(
            too_new.contains("ABI version 3") && too_new.contains("1..=2"),
            "{too_new}"
        );
        assert!(abi_version(&with(b"x")).is_err());
        assert!(abi_version(b"\0asm\x0d\0\x01\0")
            .unwrap_err()
            .to_string()
            .contains("no gateway-abi"));
    }
}
