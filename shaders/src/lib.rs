//! `shaders` will own reelforge's WGSL compute shaders and their wgpu launchers. Empty until the
//! custom-kernels issue lands: the crate and its `wgpu` feature exist now so that the
//! dependency direction is fixed (`worker` → `shaders`) and the default build stays lean.
