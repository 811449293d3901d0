// upfirdn2d (StyleGAN2; NCSN++/MCVD's FIR resampling; kernels::upfirdn): upsample each plane by
// zero insertion, pad by pad0 before and pad1 after, correlate with the flipped taps x taps
// kernel, keep every `down`-th sample. One thread per output sample; only taps that land on
// real samples are visited, in the reference's order (i outer, j inner). The kernel (at most
// 64 x 64 taps... in practice 4 x 4) is staged in shared memory.

extern "C" __global__ void upfirdn2d(const float *__restrict__ x, const float *__restrict__ kernel,
                                     float *__restrict__ out, long long total, int h, int w, int ho,
                                     int wo, int taps, int up, int down, int pad0) {
    extern __shared__ float k[];
    for (int i = threadIdx.x; i < taps * taps; i += blockDim.x) k[i] = kernel[i];
    __syncthreads();
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += stride) {
        const int ox = (int)(o % wo);
        const int oy = (int)((o / wo) % ho);
        const long long plane = o / ((long long)wo * ho);
        const int y0 = oy * down - pad0, x0 = ox * down - pad0;
        // First tap on a real (non-inserted, non-padding) sample, per axis.
        const int ib = ((up - y0 % up) % up), jb = ((up - x0 % up) % up);
        const float *src = x + plane * h * w;
        float acc = 0.f;
        int sy = (y0 + ib) / up;
        for (int i = ib; i < taps; i += up, ++sy) {
            if (sy < 0 || sy >= h) continue;
            const float *row = src + (long long)sy * w;
            int sx = (x0 + jb) / up;
            for (int j = jb; j < taps; j += up, ++sx) {
                if (sx >= 0 && sx < w) acc += k[(taps - 1 - i) * taps + (taps - 1 - j)] * row[sx];
            }
        }
        out[o] = acc;
    }
}
