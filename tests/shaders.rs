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
        let caps = capabilities(shader);
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
            if stem == "prelude" {
                // Prepended to the modules that use it (the `shader!` macro).
                continue;
            }
            // A module's own file, or a further part of one (its text inside the module's).
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                saeforge::kernels::SHADERS
                    .iter()
                    .any(|s| s.name == stem || s.source.contains(&text)),
                "shaders/{stem}.wgsl is not listed in saeforge::kernels::SHADERS"
            );
        }
    }
}

/// What a module may use: shaders named *_subgroup run only on devices with wgpu's
/// SUBGROUP feature, gemm_coop only with cooperative matrices and f16; all others must
/// validate without any of them.
fn capabilities(shader: &saeforge::gpu::Shader) -> naga::valid::Capabilities {
    use naga::valid::Capabilities as C;
    match shader.name {
        n if n.ends_with("_subgroup") => C::SUBGROUP,
        "gemm_coop" => C::COOPERATIVE_MATRIX | C::SHADER_FLOAT16,
        _ => C::empty(),
    }
}

/// One parsed and validated shader module.
struct Parsed {
    module: naga::Module,
    info: naga::valid::ModuleInfo,
}

fn parse(shader: &saeforge::gpu::Shader) -> Parsed {
    let module = naga::front::wgsl::parse_str(shader.source)
        .unwrap_or_else(|e| panic!("{}: {}", shader.name, e.emit_to_string(shader.source)));
    let caps = capabilities(shader);
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", shader.name, e.emit_to_string(shader.source)));
    Parsed { module, info }
}

/// The struct layout of a WGSL type as (member name, offset) and its size.
fn wgsl_struct(
    m: &naga::Module,
    ty: naga::Handle<naga::Type>,
) -> Option<(Vec<(String, u32)>, u32)> {
    match &m.types[ty].inner {
        naga::TypeInner::Struct { members, span } => Some((
            members
                .iter()
                .map(|mb| (mb.name.clone().unwrap_or_default(), mb.offset))
                .collect(),
            *span,
        )),
        _ => None,
    }
}

/// Compare a Rust parameter layout with a WGSL struct: same size, and the same named
/// (non-padding) fields at the same offsets.
fn check_layout(
    what: &str,
    l: &saeforge::kernels::decl::Layout,
    m: &naga::Module,
    ty: naga::Handle<naga::Type>,
) -> Vec<String> {
    let Some((members, span)) = wgsl_struct(m, ty) else {
        return vec![format!("{what}: the WGSL binding is not a struct")];
    };
    let mut errs = Vec::new();
    if span as usize != l.size {
        errs.push(format!(
            "{what}: {} is {} bytes in Rust, the WGSL struct {span}",
            l.name, l.size
        ));
    }
    let named = |v: Vec<(String, usize)>| -> Vec<(String, usize)> {
        v.into_iter().filter(|(n, _)| !n.starts_with('_')).collect()
    };
    let rust = named(l.fields.iter().map(|(n, o)| (n.to_string(), *o)).collect());
    let wgsl = named(members.into_iter().map(|(n, o)| (n, o as usize)).collect());
    if rust != wgsl {
        errs.push(format!(
            "{what}: {} fields (name, offset) differ:\n    Rust {rust:?}\n    WGSL {wgsl:?}",
            l.name
        ));
    }
    errs
}

/// Scalar kind of a storage binding's elements (through arrays, vectors and atomics).
fn elem_of(m: &naga::Module, ty: naga::Handle<naga::Type>) -> Option<naga::ScalarKind> {
    match &m.types[ty].inner {
        naga::TypeInner::Array { base, .. } => elem_of(m, *base),
        naga::TypeInner::Scalar(s) | naga::TypeInner::Atomic(s) => Some(s.kind),
        naga::TypeInner::Vector { scalar, .. } => Some(scalar.kind),
        _ => None,
    }
}

/// The value of an override-free u32 literal expression.
fn literal_u32(m: &naga::Module, e: naga::Handle<naga::Expression>) -> Option<u32> {
    match m.global_expressions[e] {
        naga::Expression::Literal(naga::Literal::U32(v)) => Some(v),
        naga::Expression::Literal(naga::Literal::I32(v)) => u32::try_from(v).ok(),
        naga::Expression::Literal(naga::Literal::AbstractInt(v)) => u32::try_from(v).ok(),
        _ => None,
    }
}

/// Check one declaration against the parsed WGSL; the mismatches found.
fn check_entry(e: &saeforge::kernels::decl::Entry, p: &Parsed) -> Vec<String> {
    use saeforge::kernels::decl::{Access, Elem, Grid, Wg};
    let m = &p.module;
    let what = format!("{}::{}", e.shader.name, e.name);
    let Some(index) = m.entry_points.iter().position(|ep| ep.name == e.name) else {
        return vec![format!(
            "{what}: no such entry point in shaders/{}.wgsl",
            e.shader.name
        )];
    };
    let ep = &m.entry_points[index];
    let uses = p.info.get_entry_point(index);
    let mut errs = Vec::new();
    for (h, var) in m.global_variables.iter() {
        let Some(rb) = &var.binding else { continue };
        if uses[h].is_empty() {
            continue;
        }
        let name = var.name.clone().unwrap_or_default();
        if rb.group != 0 {
            errs.push(format!("{what}: {name} is in group {}", rb.group));
            continue;
        }
        if rb.binding == 0 {
            match var.space {
                naga::AddressSpace::Uniform => errs.extend(check_layout(
                    &format!("{what} binding 0"),
                    &e.params,
                    m,
                    var.ty,
                )),
                _ => errs.push(format!("{what}: binding 0 ({name}) is not a uniform")),
            }
            continue;
        }
        let Some(slot) = e.binds.get(rb.binding as usize - 1) else {
            errs.push(format!(
                "{what}: uses binding {} ({name}), the declaration has {} bindings",
                rb.binding,
                e.binds.len()
            ));
            continue;
        };
        let access = match (&var.space, &m.types[var.ty].inner) {
            (naga::AddressSpace::Storage { access }, _) => {
                if access.contains(naga::StorageAccess::STORE) {
                    Access::ReadWrite
                } else {
                    Access::Read
                }
            }
            (naga::AddressSpace::Uniform, _) => Access::Uniform,
            (
                naga::AddressSpace::Handle,
                naga::TypeInner::Image {
                    class: naga::ImageClass::Storage { access, .. },
                    ..
                },
            ) => {
                if access.contains(naga::StorageAccess::STORE) {
                    Access::TextureWrite
                } else {
                    Access::TextureRead
                }
            }
            (s, _) => {
                errs.push(format!("{what}: binding {} ({name}) in {s:?}", rb.binding));
                continue;
            }
        };
        if access != slot.access {
            errs.push(format!(
                "{what}: binding {} ({name}) is {access:?} in WGSL, declared {:?} ({})",
                rb.binding, slot.access, slot.name
            ));
        }
        if let Some(l) = &slot.uniform {
            errs.extend(check_layout(
                &format!("{what} binding {}", rb.binding),
                l,
                m,
                var.ty,
            ));
        }
        if let Some(want) = slot.elem {
            let kind = match want {
                Elem::F32 => naga::ScalarKind::Float,
                Elem::U32 => naga::ScalarKind::Uint,
            };
            if elem_of(m, var.ty) != Some(kind) {
                errs.push(format!(
                    "{what}: binding {} ({name}) holds {:?}, declared {want:?} ({})",
                    rb.binding,
                    elem_of(m, var.ty),
                    slot.name
                ));
            }
        }
    }
    // Workgroup size: a literal, or an override the declaration sets, leaves at its WGSL
    // default, or has the launcher set.
    let overrides = ep.workgroup_size_overrides.unwrap_or([None; 3]);
    for (dim, (declared, over)) in e.workgroup.iter().zip(overrides).enumerate() {
        let declared = *declared;
        let actual = match over.map(|x| &m.global_expressions[x]) {
            Some(naga::Expression::Override(o)) => {
                let o = &m.overrides[*o];
                let name = o.name.clone().unwrap_or_default();
                let set = e
                    .consts
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v as u32);
                let default = o.init.and_then(|i| literal_u32(m, i));
                match declared {
                    Wg::Var(v) if v == name => continue,
                    // Computed in the WGSL from the launch's overrides (no literal default).
                    Wg::Derived(v)
                        if v == name && o.init.is_some_and(|i| literal_u32(m, i).is_none()) =>
                    {
                        if e.grid != Grid::Custom {
                            errs.push(format!(
                                "{what}: a derived workgroup size needs Grid::Custom"
                            ));
                        }
                        continue;
                    }
                    _ => (Some(name), set.or(default)),
                }
            }
            Some(other) => {
                errs.push(format!("{what}: workgroup size {dim} is {other:?}"));
                continue;
            }
            None => (None, Some(ep.workgroup_size[dim])),
        };
        let ok = matches!((declared, actual.1), (Wg::Fixed(a), Some(b)) if a == b);
        if !ok {
            errs.push(format!(
                "{what}: workgroup size {dim} is {} in WGSL (= {:?}), declared {declared:?}",
                actual.0.unwrap_or_else(|| "a literal".into()),
                actual.1
            ));
        }
    }
    let names: Vec<String> = m
        .overrides
        .iter()
        .filter_map(|(_, o)| o.name.clone())
        .collect();
    let wg_vars = e.workgroup.iter().filter_map(|w| match w {
        Wg::Var(n) | Wg::Derived(n) => Some(*n),
        Wg::Fixed(_) => None,
    });
    for n in e
        .consts
        .iter()
        .map(|(n, _)| *n)
        .chain(e.vars.iter().copied())
        .chain(wg_vars)
    {
        if !names.iter().any(|x| x == n) {
            errs.push(format!("{what}: override {n} is not in the shader"));
        }
    }
    errs
}

/// Every launch declaration (src/kernels) agrees with its WGSL: bindings and their access
/// and element type, parameter struct size and field offsets, workgroup size. Needs no
/// adapter.
#[test]
fn every_declaration_matches_its_shader() {
    let mut parsed = std::collections::HashMap::new();
    let mut errs = Vec::new();
    let entries = saeforge::kernels::entries();
    for e in &entries {
        let p = parsed
            .entry(e.shader.name)
            .or_insert_with(|| parse(e.shader));
        errs.extend(check_entry(e, p));
    }
    assert!(
        errs.is_empty(),
        "launch declarations disagree with the WGSL:\n{}",
        errs.join("\n")
    );
}

/// shaders/gemm_subgroup.wgsl is generated: it must be exactly what
/// tools/gen_gemm_subgroup.py writes (edit the generator, then regenerate). Needs python3
/// (.ci/run installs it).
#[test]
fn generated_gemm_subgroup_matches_its_generator() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::env::temp_dir().join(format!("gemm_subgroup.{}.wgsl", std::process::id()));
    let status = std::process::Command::new("python3")
        .arg(format!("{root}/tools/gen_gemm_subgroup.py"))
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("python3 tools/gen_gemm_subgroup.py: {e} (python3 needed)"));
    assert!(
        status.success(),
        "tools/gen_gemm_subgroup.py failed: {status}"
    );
    let generated = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let stored = std::fs::read_to_string(format!("{root}/shaders/gemm_subgroup.wgsl")).unwrap();
    if generated != stored {
        let line = generated
            .lines()
            .zip(stored.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "the line count".to_string(),
                |i| format!("line {}", i + 1),
            );
        panic!(
            "shaders/gemm_subgroup.wgsl differs from tools/gen_gemm_subgroup.py's output at \
             {line}; regenerate it: python3 tools/gen_gemm_subgroup.py shaders/gemm_subgroup.wgsl"
        );
    }
}
