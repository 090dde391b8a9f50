//! Launch declarations: every kernel entry point is declared once, as an [`Entry`] beside
//! its launcher (name, bindings with access, element type and shape, parameter struct,
//! workgroup size, grid), and launched from that declaration through [`Entry::call`].
//!
//! The declaration is the contract with the WGSL: `tests/shaders.rs` parses every shader
//! with naga (no adapter needed) and checks each declaration against it: binding numbers
//! and access, element types, the parameter struct's size and field offsets, the workgroup
//! size (literal, or override set by the launcher or left at the WGSL default).
//!
//! At launch, [`Call::record`] checks what a launcher passes against the declaration: each
//! bound tensor's element type and shape (shapes are written with named dimensions, e.g.
//! `"rows, n"`; the launcher gives their values with [`Call::dim`]; a dimension it does not
//! give is taken from the first tensor whose shape is that dimension alone, e.g. `cap` from
//! `idx`), the parameter struct's type, the override constants, and that every dimension
//! fits the shaders' u32 indices. Launchers then only check what the declaration cannot
//! say (a block size in range, k <= n, ...).

use crate::gpu::{Bind, DType, Gpu, GpuTensor, Kernel, Shader};
use crate::{Error, Result};

/// Layout of a `#[repr(C)]` parameter struct: what the WGSL struct must match.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub name: &'static str,
    pub size: usize,
    /// (field name, byte offset), in declaration order; padding fields start with `_`.
    pub fields: &'static [(&'static str, usize)],
}

/// A parameter struct (made by [`uniform!`](crate::uniform)).
pub trait Uniform: bytemuck::Pod {
    const LAYOUT: Layout;
}

/// Declare a `#[repr(C)]` uniform struct and its [`Layout`] (field offsets for the
/// contract test).
#[macro_export]
#[doc(hidden)]
macro_rules! uniform {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($fv:vis $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name { $($fv $f: $t),* }
        impl $crate::kernels::decl::Uniform for $name {
            const LAYOUT: $crate::kernels::decl::Layout = $crate::kernels::decl::Layout {
                name: stringify!($name),
                size: std::mem::size_of::<$name>(),
                fields: &[$((stringify!($f), std::mem::offset_of!($name, $f))),*],
            };
        }
    };
}

/// How a binding is accessed: WGSL `var<storage, read>`, `var<storage, read_write>`,
/// `var<uniform>`, `texture_storage_2d<rgba32float, read>` or `<..., write>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
    Uniform,
    TextureRead,
    TextureWrite,
}

/// Element type of a storage binding (vec4 views count as their scalar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    U32,
}

/// One binding (1, 2, ... in declaration order; 0 is the parameters).
#[derive(Debug)]
pub struct Slot {
    pub name: &'static str,
    pub access: Access,
    /// None for uniforms and textures.
    pub elem: Option<Elem>,
    /// Named dimensions, e.g. `"rows, n"`, `"rows + 1"`, `"n / 4"`; `"any"`: unchecked;
    /// `">= 1"`-style: a minimum element count. For a uniform, its struct (`uniform`).
    pub shape: &'static str,
    /// A uniform binding's struct.
    pub uniform: Option<Layout>,
}

impl Slot {
    pub const fn read(name: &'static str, elem: Elem, shape: &'static str) -> Slot {
        Slot {
            name,
            access: Access::Read,
            elem: Some(elem),
            shape,
            uniform: None,
        }
    }
    pub const fn write(name: &'static str, elem: Elem, shape: &'static str) -> Slot {
        Slot {
            name,
            access: Access::ReadWrite,
            elem: Some(elem),
            shape,
            uniform: None,
        }
    }
    pub const fn texture(name: &'static str, shape: &'static str) -> Slot {
        Slot {
            name,
            access: Access::TextureRead,
            elem: None,
            shape,
            uniform: None,
        }
    }
    pub const fn texture_write(name: &'static str, shape: &'static str) -> Slot {
        Slot {
            name,
            access: Access::TextureWrite,
            elem: None,
            shape,
            uniform: None,
        }
    }
    pub const fn uniform(name: &'static str, layout: Layout) -> Slot {
        Slot {
            name,
            access: Access::Uniform,
            elem: None,
            shape: "",
            uniform: Some(layout),
        }
    }
}

/// `Slot::read(name, Elem::F32, shape)` and friends, short.
pub const fn rf(name: &'static str, shape: &'static str) -> Slot {
    Slot::read(name, Elem::F32, shape)
}
pub const fn ru(name: &'static str, shape: &'static str) -> Slot {
    Slot::read(name, Elem::U32, shape)
}
pub const fn wf(name: &'static str, shape: &'static str) -> Slot {
    Slot::write(name, Elem::F32, shape)
}
pub const fn wu(name: &'static str, shape: &'static str) -> Slot {
    Slot::write(name, Elem::U32, shape)
}

/// One dimension of a workgroup size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wg {
    /// A fixed size: a WGSL literal, or an override the declaration sets (`consts`) or
    /// leaves at its WGSL default, equal to this.
    Fixed(u32),
    /// An override the launcher sets at each launch ([`Call::set`]).
    Var(&'static str),
    /// An override the WGSL computes from overrides the launcher sets (e.g. gemm_reg's
    /// `RG_NT = RG_WX * RG_WY`); only with `Grid::Custom`, whose launcher sizes the grid.
    Derived(&'static str),
}

/// How the workgroup grid follows from the launch's item count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// One invocation per item, the workgroup count folded into the grid limit.
    Items,
    /// One workgroup per item, folded likewise.
    Groups,
    /// One workgroup.
    Single,
    /// Given by the launcher ([`Call::grid`]).
    Custom,
}

/// One kernel entry point: the whole launch contract.
#[derive(Debug)]
pub struct Entry {
    pub shader: &'static Shader,
    pub name: &'static str,
    pub params: Layout,
    pub binds: &'static [Slot],
    /// Override constants every launch sets to these values.
    pub consts: &'static [(&'static str, f64)],
    /// Override constants the launcher sets at each launch (besides `Wg::Var`s).
    pub vars: &'static [&'static str],
    pub workgroup: [Wg; 3],
    pub grid: Grid,
}

impl Entry {
    /// An entry point of `shader` with parameters `params` and bindings `binds`: no
    /// override constants, a one-invocation workgroup, a custom grid; refine with the
    /// methods below (all `const`, so declarations stay statics).
    pub const fn new(
        shader: &'static Shader,
        name: &'static str,
        params: Layout,
        binds: &'static [Slot],
    ) -> Entry {
        Entry {
            shader,
            name,
            params,
            binds,
            consts: &[],
            vars: &[],
            workgroup: [Wg::Fixed(1), Wg::Fixed(1), Wg::Fixed(1)],
            grid: Grid::Custom,
        }
    }
    pub const fn consts(mut self, c: &'static [(&'static str, f64)]) -> Entry {
        self.consts = c;
        self
    }
    pub const fn vars(mut self, v: &'static [&'static str]) -> Entry {
        self.vars = v;
        self
    }
    /// The workgroup's x size (y and z 1).
    pub const fn wg(mut self, x: Wg) -> Entry {
        self.workgroup = [x, Wg::Fixed(1), Wg::Fixed(1)];
        self
    }
    pub const fn wg2(mut self, x: Wg, y: Wg) -> Entry {
        self.workgroup = [x, y, Wg::Fixed(1)];
        self
    }
    pub const fn grid(mut self, g: Grid) -> Entry {
        self.grid = g;
        self
    }
    /// A 1-D entry point of a family whose only override constant is `WG`: workgroups of
    /// `WG` invocations (the override set to that), one invocation per item.
    pub const fn one_d<const WG: u32>(
        shader: &'static Shader,
        name: &'static str,
        params: Layout,
        binds: &'static [Slot],
    ) -> Entry {
        Entry::new(shader, name, params, binds)
            .consts(const { &[("WG", WG as f64)] })
            .wg(Wg::Fixed(WG))
            .grid(Grid::Items)
    }
}

/// A shader module: `shaders/<name>.wgsl` after the prelude, then any further parts
/// (`shaders/<part>.wgsl`, in the order given) of a module too long for one file.
#[macro_export]
#[doc(hidden)]
macro_rules! shader {
    ($name:literal $(, $part:literal)*) => {
        $crate::gpu::Shader {
            name: $name,
            source: concat!(
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/prelude.wgsl")),
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/shaders/",
                    $name,
                    ".wgsl"
                ))
                $(, include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/shaders/",
                    $part,
                    ".wgsl"
                )))*
            ),
        }
    };
}

/// One bound resource of a [`Call`].
enum Res<'a> {
    Tensor(&'a GpuTensor),
    /// A stand-in for a binding the kernel does not read this time (no checks).
    Unused(&'a GpuTensor),
    Texture(&'a wgpu::TextureView),
    Uniform(&'a wgpu::Buffer),
}

/// A launch of an [`Entry`] being assembled: see the module docs.
pub struct Call<'a, P: Uniform> {
    entry: &'static Entry,
    params: P,
    dims: Vec<(&'static str, usize)>,
    vars: Vec<(&'static str, f64)>,
    res: Vec<Res<'a>>,
    items: Option<usize>,
    groups: Option<[u32; 3]>,
    skip: bool,
}

impl Entry {
    /// Start a launch with parameters `p` (of the declared struct).
    pub fn call<'a, P: Uniform>(&'static self, p: P) -> Call<'a, P> {
        Call {
            entry: self,
            params: p,
            dims: Vec::new(),
            vars: Vec::new(),
            res: Vec::new(),
            items: None,
            groups: None,
            skip: false,
        }
    }

    fn err(&self, what: impl std::fmt::Display) -> Error {
        Error::Internal(format!("{}: {what}", self.name))
    }
}

impl<'a, P: Uniform> Call<'a, P> {
    /// The value of a named dimension of the binding shapes.
    pub fn dim(mut self, name: &'static str, v: usize) -> Self {
        self.dims.push((name, v));
        self
    }
    /// Several dimensions.
    pub fn dims(mut self, d: &[(&'static str, usize)]) -> Self {
        self.dims.extend_from_slice(d);
        self
    }
    /// Set a launch-time override constant (a `Wg::Var` or one of `vars`).
    pub fn set(mut self, name: &'static str, v: f64) -> Self {
        self.vars.push((name, v));
        self
    }
    /// Bind the next storage binding.
    pub fn bind(mut self, t: &'a GpuTensor) -> Self {
        self.res.push(Res::Tensor(t));
        self
    }
    /// Bind the next storage bindings, in order: `binds(&[a, b])` is `bind(a).bind(b)`.
    pub fn binds(mut self, ts: &[&'a GpuTensor]) -> Self {
        self.res.extend(ts.iter().map(|&t| Res::Tensor(t)));
        self
    }
    /// Bind the next storage binding if given, else `stand_in` (which the kernel must not
    /// read in that case: a flag in the parameters says so).
    pub fn bind_opt(mut self, t: Option<&'a GpuTensor>, stand_in: &'a GpuTensor) -> Self {
        self.res.push(match t {
            Some(t) => Res::Tensor(t),
            None => Res::Unused(stand_in),
        });
        self
    }
    /// Bind the next storage binding to a buffer the kernel reads under another type or
    /// shape (e.g. the same buffer as vec4s) or not at all: no checks.
    pub fn bind_raw(mut self, t: &'a GpuTensor) -> Self {
        self.res.push(Res::Unused(t));
        self
    }
    /// Bind the next texture binding.
    pub fn texture(mut self, v: &'a wgpu::TextureView) -> Self {
        self.res.push(Res::Texture(v));
        self
    }
    /// Bind the next write-only texture binding.
    pub fn texture_write(mut self, v: &'a wgpu::TextureView) -> Self {
        self.res.push(Res::Texture(v));
        self
    }
    /// Bind the next uniform binding (a buffer the caller rewrites between submissions).
    pub fn uniform(mut self, b: &'a wgpu::Buffer) -> Self {
        self.res.push(Res::Uniform(b));
        self
    }
    /// Items of a `Grid::Items` or `Grid::Groups` launch.
    pub fn items(mut self, n: usize) -> Self {
        self.items = Some(n);
        self
    }
    /// Items of a `Grid::Items` or `Grid::Groups` launch that records nothing when there are
    /// none: `items(n).skip_if(n == 0)`.
    pub fn items_or_skip(self, n: usize) -> Self {
        self.items(n).skip_if(n == 0)
    }
    /// The workgroup grid of a `Grid::Custom` launch.
    pub fn grid(mut self, g: [u32; 3]) -> Self {
        self.groups = Some(g);
        self
    }

    /// Check the launch but record nothing when `empty` (e.g. no rows).
    pub fn skip_if(mut self, empty: bool) -> Self {
        self.skip = empty;
        self
    }

    /// Check the launch against the declaration and record its dispatch.
    pub fn record(self, gpu: &Gpu, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        let e = self.entry;
        if P::LAYOUT != e.params {
            return Err(e.err(format!(
                "parameters {} passed, {} declared",
                P::LAYOUT.name,
                e.params.name
            )));
        }
        if self.res.len() != e.binds.len() {
            return Err(e.err(format!(
                "{} bindings passed, {} declared",
                self.res.len(),
                e.binds.len()
            )));
        }
        let mut dims = self.dims.clone();
        for (name, v) in &dims {
            if u32::try_from(*v).is_err() {
                return Err(e.err(format!("{name} = {v} does not fit 32 bits")));
            }
        }
        // Dimensions not given: from the first tensor whose shape is that dimension alone.
        for (slot, r) in e.binds.iter().zip(&self.res) {
            if let Res::Tensor(t) = r {
                let s: &'static str = slot.shape.trim();
                if is_ident(s) && !dims.iter().any(|(n, _)| *n == s) {
                    dims.push((s, t.len()));
                }
            }
        }
        let mut binds = Vec::with_capacity(self.res.len());
        for (slot, r) in e.binds.iter().zip(&self.res) {
            binds.push(check_slot(e, slot, r, &dims)?);
        }
        let mut constants: Vec<(&'static str, f64)> = e.consts.to_vec();
        let declared = |n: &str| {
            e.vars.contains(&n)
                || e.workgroup
                    .iter()
                    .any(|w| matches!(w, Wg::Var(m) if *m == n))
        };
        for &(n, v) in &self.vars {
            if !declared(n) {
                return Err(e.err(format!("override {n} is not declared")));
            }
            constants.push((n, v));
        }
        let wanted = e
            .vars
            .iter()
            .copied()
            .chain(e.workgroup.iter().filter_map(|w| match w {
                Wg::Var(n) => Some(*n),
                Wg::Fixed(_) | Wg::Derived(_) => None,
            }));
        for n in wanted {
            if !self.vars.iter().any(|(m, _)| *m == n) {
                return Err(e.err(format!("override {n} not set")));
            }
        }
        let wg_x = match e.workgroup[0] {
            Wg::Fixed(x) => x as usize,
            Wg::Derived(_) => 1,
            Wg::Var(n) => self
                .vars
                .iter()
                .find(|(m, _)| *m == n)
                .map_or(1, |(_, v)| *v as usize),
        };
        let groups = match (e.grid, self.items, self.groups) {
            (Grid::Items, Some(n), None) => gpu.groups_for(n, wg_x),
            (Grid::Groups, Some(n), None) => gpu.groups_for(n, 1),
            (Grid::Single, None, None) => [1, 1, 1],
            (Grid::Custom, None, Some(g)) => g,
            (g, ..) => return Err(e.err(format!("grid {g:?} launched with the wrong extent"))),
        };
        if self.skip {
            return Ok(());
        }
        let k = Kernel {
            shader: e.shader,
            entry: e.name,
            constants: &constants,
        };
        gpu.dispatch(enc, &k, &self.params, &binds, groups)
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// The resource of one binding, after checking it against its slot.
fn check_slot<'a>(
    e: &Entry,
    slot: &Slot,
    r: &Res<'a>,
    dims: &[(&'static str, usize)],
) -> Result<Bind<'a>> {
    let kind = match (slot.access, r) {
        (Access::Read, Res::Tensor(t) | Res::Unused(t)) => Bind::Read(t),
        (Access::ReadWrite, Res::Tensor(t) | Res::Unused(t)) => Bind::Write(t),
        (Access::TextureRead, Res::Texture(v)) => Bind::Texture(v),
        (Access::TextureWrite, Res::Texture(v)) => Bind::TextureWrite(v),
        (Access::Uniform, Res::Uniform(b)) => {
            let need = slot.uniform.as_ref().map_or(0, |l| l.size) as u64;
            if b.size() < need {
                return Err(e.err(format!(
                    "{}: uniform buffer of {} bytes, its struct needs {need}",
                    slot.name,
                    b.size()
                )));
            }
            Bind::Uniform(b)
        }
        (a, _) => return Err(e.err(format!("{}: wrong kind of resource for {a:?}", slot.name))),
    };
    if let Res::Tensor(t) = r {
        let want = match slot.elem {
            Some(Elem::U32) => Some(DType::U32),
            Some(Elem::F32) => Some(DType::F32),
            None => None,
        };
        if let Some(d) = want
            && t.dtype != d
        {
            return Err(e.err(format!(
                "{} has element type {:?}, expected {d:?}",
                slot.name, t.dtype
            )));
        }
        check_shape(e, slot, t, dims)?;
    }
    Ok(kind)
}

/// Check a tensor against a declared shape: with as many dimensions as declared, each must
/// match; otherwise the element count must.
fn check_shape(
    e: &Entry,
    slot: &Slot,
    t: &GpuTensor,
    dims: &[(&'static str, usize)],
) -> Result<()> {
    let s = slot.shape.trim();
    if s == "any" || s.is_empty() {
        return Ok(());
    }
    if let Some(min) = s.strip_prefix(">=") {
        let m = eval(e, min, dims)?;
        if t.len() < m {
            return Err(e.err(format!(
                "{} has {} elements (shape {:?}), expected at least {m}",
                slot.name,
                t.len(),
                t.shape
            )));
        }
        return Ok(());
    }
    let want: Vec<usize> = s
        .split(',')
        .map(|f| eval(e, f, dims))
        .collect::<Result<_>>()?;
    let ok = if t.shape.len() == want.len() {
        t.shape == want
    } else {
        t.len() == want.iter().product::<usize>()
    };
    if !ok {
        return Err(e.err(format!(
            "{} has shape {:?}, expected {want:?} ({s})",
            slot.name, t.shape
        )));
    }
    Ok(())
}

/// Evaluate `a + b * c / d`-style expressions of dimension names and integers
/// (`*` and `/` bind tighter than `+` and `-`, left to right).
pub fn eval(e: &Entry, expr: &str, dims: &[(&'static str, usize)]) -> Result<usize> {
    let mut total: Option<usize> = Some(0);
    let expr = expr.replace('-', "+-");
    for term in expr.split('+') {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        let (neg, term) = match term.strip_prefix('-') {
            Some(t) => (true, t),
            None => (false, term),
        };
        let mut v: Option<usize> = None;
        let mut op = '*';
        for tok in term.split_inclusive(['*', '/']) {
            let (atom, next) = match tok.strip_suffix(['*', '/']) {
                Some(a) => (a, tok.chars().last().unwrap_or('*')),
                None => (tok, '*'),
            };
            let atom = atom.trim();
            let x = match atom.parse::<usize>() {
                Ok(x) => x,
                Err(_) => dims
                    .iter()
                    .find(|(n, _)| *n == atom)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| e.err(format!("dimension {atom} not given")))?,
            };
            v = match (v, op) {
                (None, _) => Some(x),
                (Some(a), '*') => a.checked_mul(x),
                (Some(a), _) => a.checked_div(x),
            };
            op = next;
        }
        let v = v.ok_or_else(|| e.err(format!("shape {expr} overflows")))?;
        total = if neg {
            total.and_then(|t| t.checked_sub(v))
        } else {
            total.and_then(|t| t.checked_add(v))
        };
    }
    total.ok_or_else(|| e.err(format!("shape {expr} overflows")))
}

/// `vec4` when the launch can take the vec4 entry point (rows of whole vec4s), else
/// `scalar`: the one choice every family with `*_vec4` twins makes.
pub fn vec4_if(vec4: bool, scalar: &'static Entry, v4: &'static Entry) -> &'static Entry {
    if vec4 { v4 } else { scalar }
}

/// An elementwise launch over `items`: the vec4 entry point over `items / 4` vec4s when
/// `items` is a whole number of vec4s, else the scalar one over `items`.
pub fn vec4_split(
    items: usize,
    scalar: &'static Entry,
    v4: &'static Entry,
) -> (&'static Entry, usize) {
    vec4_items(items.is_multiple_of(4), scalar, v4, items)
}

/// The entry and invocation count of an elementwise launch over `len` values: `v4` with
/// one invocation per 4 values when `vec4` (the caller knows len is a multiple of 4), else
/// `scalar` with one per value.
pub fn vec4_items(
    vec4: bool,
    scalar: &'static Entry,
    v4: &'static Entry,
    len: usize,
) -> (&'static Entry, usize) {
    if vec4 { (v4, len / 4) } else { (scalar, len) }
}

/// A size as the shaders' u32, or an error naming the kernel and the quantity.
pub fn to_u32(kernel: &str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| Error::Internal(format!("{kernel}: {what} = {v} does not fit 32 bits")))
}

/// Refuse a size past `max` (kernels that index past the element count, e.g. partials).
pub fn fits(kernel: &str, what: &str, v: usize, max: usize) -> Result<()> {
    if v > max {
        return Err(Error::Internal(format!(
            "{kernel}: {what} = {v} is more than the kernels index ({max})"
        )));
    }
    Ok(())
}

/// rows * cols as the shaders' u32 (their flat indices), or an error naming the kernel.
pub fn elements(kernel: &str, rows: usize, cols: usize) -> Result<u32> {
    rows.checked_mul(cols)
        .and_then(|l| u32::try_from(l).ok())
        .filter(|_| u32::try_from(cols).is_ok())
        .ok_or_else(|| {
            Error::Internal(format!(
                "{kernel}: {rows} x {cols} elements do not fit 32-bit indices"
            ))
        })
}
