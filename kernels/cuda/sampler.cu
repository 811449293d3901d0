// The fused diffusion sampler steps (kernels::sampler), elementwise, one pass in place of
// candle's chain of affine and binary ops; the scalars are computed on the CPU in f64 and
// rounded to f32 (shaders/src/ddim.wgsl and ddpm.wgsl do the same arithmetic):
//   DDIM (eta = 0): x0 = clamp((x - eps*s1) * inv_sa, -1, 1); e = (x - x0*sa) * inv_s1;
//                   out = x0*sa_prev + e*s1_prev
//   DDPM:           x0 as above; out = x0*c_x0 + x*c_x (+ noise*sigma unless the last step)
// Grid-stride loops; `vec` (set by the launcher when n and every offset are multiples of 4)
// takes the 16-byte path.

struct Ddim { float s1, inv_sa, sa, inv_s1, sa_prev, s1_prev; };
struct Ddpm { float s1, inv_sa, c_x0, c_x, sigma; int noisy; };

__device__ __forceinline__ float ddim1(float x, float e, const Ddim &p) {
    const float x0 = fminf(fmaxf((x - e * p.s1) * p.inv_sa, -1.f), 1.f);
    const float ee = (x - x0 * p.sa) * p.inv_s1;
    return x0 * p.sa_prev + ee * p.s1_prev;
}

__device__ __forceinline__ float ddpm1(float x, float e, float z, const Ddpm &p) {
    const float x0 = fminf(fmaxf((x - e * p.s1) * p.inv_sa, -1.f), 1.f);
    const float mean = x0 * p.c_x0 + x * p.c_x;
    return p.noisy ? mean + z * p.sigma : mean;
}

extern "C" __global__ void ddim_step(const float *__restrict__ x, const float *__restrict__ eps,
                                     float *__restrict__ out, long long n, int vec, Ddim p) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        const float4 *e4 = reinterpret_cast<const float4 *>(eps);
        float4 *o4 = reinterpret_cast<float4 *>(out);
        for (; i < n / 4; i += stride) {
            const float4 a = x4[i], e = e4[i];
            o4[i] = make_float4(ddim1(a.x, e.x, p), ddim1(a.y, e.y, p), ddim1(a.z, e.z, p), ddim1(a.w, e.w, p));
        }
    } else {
        for (; i < n; i += stride) out[i] = ddim1(x[i], eps[i], p);
    }
}

extern "C" __global__ void ddpm_step(const float *__restrict__ x, const float *__restrict__ eps,
                                     const float *__restrict__ noise, float *__restrict__ out,
                                     long long n, int vec, Ddpm p) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        const float4 *e4 = reinterpret_cast<const float4 *>(eps);
        const float4 *z4 = reinterpret_cast<const float4 *>(noise);
        float4 *o4 = reinterpret_cast<float4 *>(out);
        for (; i < n / 4; i += stride) {
            const float4 a = x4[i], e = e4[i];
            const float4 z = p.noisy ? z4[i] : make_float4(0.f, 0.f, 0.f, 0.f);
            o4[i] = make_float4(ddpm1(a.x, e.x, z.x, p), ddpm1(a.y, e.y, z.y, p), ddpm1(a.z, e.z, z.z, p),
                                ddpm1(a.w, e.w, z.w, p));
        }
    } else {
        for (; i < n; i += stride) out[i] = ddpm1(x[i], eps[i], p.noisy ? noise[i] : 0.f, p);
    }
}
