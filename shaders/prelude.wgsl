// Shared helpers, prepended to the shader modules that use them (see src/kernels/mod.rs,
// `with_prelude!`); naga parses the concatenation (tests/shaders.rs).

