//! Every shader parses and validates with naga, with no adapter needed, so a WGSL mistake is
//! caught on any machine, CI included.

#[test]
fn every_shader_validates() {
    let mut failures = Vec::new();
    for shader in saeforge::kernels::SHADERS {
        let module = match naga::front::wgsl::parse_str(shader.source) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!(
                    "{}: {}",
                    shader.name,
                    e.emit_to_string(shader.source)
                ));
                continue;
            }
        };
        // Shaders named *_subgroup run only on devices with wgpu's SUBGROUP feature; all
        // others must validate without it.
        let caps = if shader.name.ends_with("_subgroup") {
            naga::valid::Capabilities::SUBGROUP
        } else {
            naga::valid::Capabilities::empty()
        };
        let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
        if let Err(e) = v.validate(&module) {
            failures.push(format!(
                "{}: {}",
                shader.name,
                e.emit_to_string(shader.source)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "shader validation failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_shader_file_is_registered() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            assert!(
                saeforge::kernels::SHADERS.iter().any(|s| s.name == stem),
                "shaders/{stem}.wgsl is not listed in saeforge::kernels::SHADERS"
            );
        }
    }
}
