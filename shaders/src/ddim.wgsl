// One DDIM (η = 0) step, elementwise, with Schedule::ddim_step's arithmetic: every scalar is a
// uniform, rounded to f32 on the CPU as candle rounds `tensor * f64` (and `/ f64` is a multiply
// by the f32 reciprocal).
//   x0  = clamp((x - eps * s1) * inv_sa, -1, 1)      s1 = √(1−ā), inv_sa = 1/√ā
//   eps = (x - x0 * sa) * inv_s1                      sa = √ā, inv_s1 = 1/√(1−ā)
//   out = x0 * sa_prev + eps * s1_prev                √ā_prev, √(1−ā_prev)

struct Params {
    len: u32,
    s1: f32,
    inv_sa: f32,
    sa: f32,
    inv_s1: f32,
    sa_prev: f32,
    s1_prev: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> eps: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if i >= p.len {
        return;
    }
    let xi = x[i];
    let x0 = clamp((xi - eps[i] * p.s1) * p.inv_sa, -1.0, 1.0);
    let e = (xi - x0 * p.sa) * p.inv_s1;
    out[i] = x0 * p.sa_prev + e * p.s1_prev;
}
