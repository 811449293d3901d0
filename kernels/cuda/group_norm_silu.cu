// Fused GroupNorm + affine + SiLU over a contiguous NCHW f32 tensor (kernels::group_norm):
//   y = silu((x - mean) / sqrt(var + eps) * a[n, c] + b[n, c])
// One block per (item, group). Pass 1 accumulates the group's sum and sum of squares about a
// shift (the group's first sample, which keeps the variance well conditioned without a second
// read pass); pass 2 normalises and writes. Two reads and one write of x: the unfused candle ops
// make about six tensor-sized passes. 16-byte loads where the group is 4-aligned.

#define BLOCK 256

__device__ __forceinline__ void block_sum2(float &s, float &q) {
    __shared__ float ss[BLOCK / 32];
    __shared__ float sq[BLOCK / 32];
    for (int o = 16; o > 0; o >>= 1) {
        s += __shfl_xor_sync(0xffffffffu, s, o);
        q += __shfl_xor_sync(0xffffffffu, q, o);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) { ss[warp] = s; sq[warp] = q; }
    __syncthreads();
    if (warp == 0) {
        s = lane < BLOCK / 32 ? ss[lane] : 0.f;
        q = lane < BLOCK / 32 ? sq[lane] : 0.f;
        for (int o = 16; o > 0; o >>= 1) {
            s += __shfl_xor_sync(0xffffffffu, s, o);
            q += __shfl_xor_sync(0xffffffffu, q, o);
        }
        if (lane == 0) { ss[0] = s; sq[0] = q; }
    }
    __syncthreads();
    s = ss[0];
    q = sq[0];
}

__device__ __forceinline__ float silu(float v) { return v / (1.f + __expf(-v)); }

// x, y: (items, channels, plane); a, b: (items, channels).
extern "C" __global__ void __launch_bounds__(BLOCK) group_norm_silu(
    const float *__restrict__ x, const float *__restrict__ a, const float *__restrict__ b,
    float *__restrict__ y, int groups, int channels, int plane, float eps) {
    const int ng = blockIdx.x;            // item * groups + group
    const int item = ng / groups, group = ng % groups;
    const int cg = channels / groups;
    const long long count = (long long)cg * plane;
    const long long base = (long long)ng * count;
    const float *xg = x + base;
    float *yg = y + base;
    const float shift = xg[0];
    float s = 0.f, q = 0.f;
    const bool vec = (count % 4 == 0) && (base % 4 == 0);
    if (vec) {
        const float4 *x4 = reinterpret_cast<const float4 *>(xg);
        for (long long i = threadIdx.x; i < count / 4; i += BLOCK) {
            float4 v = x4[i];
            float d0 = v.x - shift, d1 = v.y - shift, d2 = v.z - shift, d3 = v.w - shift;
            s += (d0 + d1) + (d2 + d3);
            q += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
        }
    } else {
        for (long long i = threadIdx.x; i < count; i += BLOCK) {
            float d = xg[i] - shift;
            s += d;
            q += d * d;
        }
    }
    block_sum2(s, q);
    const float inv_n = 1.f / (float)count;
    const float dm = s * inv_n;                       // mean - shift
    const float var = fmaxf(q * inv_n - dm * dm, 0.f);
    const float mean = shift + dm;
    const float inv = rsqrtf(var + eps);
    const float *ai = a + (long long)item * channels + group * cg;
    const float *bi = b + (long long)item * channels + group * cg;
    if (vec && plane % 4 == 0) {
        const float4 *x4 = reinterpret_cast<const float4 *>(xg);
        float4 *y4 = reinterpret_cast<float4 *>(yg);
        const int plane4 = plane / 4;
        for (long long i = threadIdx.x; i < count / 4; i += BLOCK) {
            const int c = (int)(i / plane4);
            const float sa = ai[c] * inv, sb = bi[c] - mean * sa;
            float4 v = x4[i];
            v.x = silu(v.x * sa + sb);
            v.y = silu(v.y * sa + sb);
            v.z = silu(v.z * sa + sb);
            v.w = silu(v.w * sa + sb);
            y4[i] = v;
        }
    } else {
        for (long long i = threadIdx.x; i < count; i += BLOCK) {
            const int c = (int)(i / plane);
            const float sa = ai[c] * inv, sb = bi[c] - mean * sa;
            yg[i] = silu(xg[i] * sa + sb);
        }
    }
}
