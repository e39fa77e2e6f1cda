// Fused Lloyd step for k-means: one pass over the points per iteration.
//
// Each block reads its points once (16-byte vector loads into registers),
// finds the nearest centre with the centres held in shared memory, sums the
// points of each label across the warp with shuffles, adds them into the
// warp's cluster sums and counts in shared memory, and writes one float64
// partial per block: k*(d+1) sums/counts and its inertia.
// The host (CuPy) adds the partials up in float64. Labels are written only
// by the separate assign kernel, when they are needed.
//
// Layout: X is n rows of `ld` values (ld >= d, a multiple of the vector
// width, padding columns zero); centres are passed as -2*c with the same
// row length, plus ||c||^2. MAXD is a compile-time bound on ld (4, 8, 16 or
// 32), not the problem size, so the kernels compile once per dtype and bound.
// Offsets are 64-bit throughout, so n*ld >= 2^31 is safe.
//
// Architectures: sm_75 and newer (__match_any_sync needs sm_70). The largest
// label group of a warp is found with __reduce_max_sync where it exists
// (sm_80+, GPUSEG_REDUX=1) and with a butterfly of shuffles below (sm_75,
// GPUSEG_REDUX=0); both give the same integer. The host passes
// -DGPUSEG_REDUX from the device's compute capability; without it the
// architecture being compiled decides.
#ifndef GPUSEG_REDUX
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GPUSEG_REDUX 1
#else
#define GPUSEG_REDUX 0
#endif
#endif

__device__ __forceinline__ int warp_max(int v) {
#if GPUSEG_REDUX
    return (int)__reduce_max_sync(0xffffffffu, (unsigned)v);
#else
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
#endif
}


template <typename T> struct Vec;
template <> struct Vec<float> { typedef float4 type; static constexpr int width = 4; };
template <> struct Vec<double> { typedef double2 type; static constexpr int width = 2; };

template <typename T, int MAXD>
__device__ __forceinline__ void load_row(const T* __restrict__ X, long long i, int ld, T (&x)[MAXD]) {
    typedef typename Vec<T>::type V;
    constexpr int W = Vec<T>::width;
    const V* row = reinterpret_cast<const V*>(X + (size_t)i * (size_t)ld);
#pragma unroll
    for (int v = 0; v < MAXD / W; ++v) {
        V q;
        if (v * W < ld) q = __ldg(row + v); else q = V{};
        const T* e = reinterpret_cast<const T*>(&q);
#pragma unroll
        for (int w = 0; w < W; ++w) x[v * W + w] = e[w];
    }
}

// A thread's P rows of a block step (row base + p * blockDim.x + threadIdx.x), each
// loaded when it lies before ``end`` and zeroed (and marked invalid) past it.
template <typename T, int MAXD, int P>
__device__ __forceinline__ void load_rows(const T* __restrict__ X, long long base, long long end, int ld,
                                          T (&x)[P][MAXD], bool (&valid)[P]) {
#pragma unroll
    for (int p = 0; p < P; ++p) {
        const long long i = base + (long long)p * blockDim.x + threadIdx.x;
        valid[p] = i < end;
        if (valid[p]) {
            load_row<T, MAXD>(X, i, ld, x[p]);
        } else {
#pragma unroll
            for (int f = 0; f < MAXD; ++f) x[p][f] = T(0);
        }
    }
}

// Points per thread and pass: each centre read from shared memory serves P
// points, which cuts shared loads per point P-fold and gives P independent
// FMA chains (register budget: P*MAXD values).
template <int MAXD> struct PointsPerThread { static constexpr int value = MAXD <= 8 ? 4 : (MAXD <= 16 ? 2 : 1); };

// Nearest centre of P points and min_j (||c_j||^2 - 2 x.c_j); lowest index on ties.
template <typename T, int MAXD, int P>
__device__ __forceinline__ void nearest(const T (&x)[P][MAXD], const T* __restrict__ cm2,
                                        const T* __restrict__ csq, int k, int (&label)[P]) {
    typedef typename Vec<T>::type V;
    constexpr int W = Vec<T>::width;
    T best[P];
    for (int j = 0; j < k; ++j) {
        T acc[P];
        const T cj = csq[j];
#pragma unroll
        for (int p = 0; p < P; ++p) acc[p] = cj;
        const V* c = reinterpret_cast<const V*>(cm2 + j * MAXD);
#pragma unroll
        for (int v = 0; v < MAXD / W; ++v) {
            V q = c[v];
            const T* e = reinterpret_cast<const T*>(&q);
#pragma unroll
            for (int w = 0; w < W; ++w)
#pragma unroll
                for (int p = 0; p < P; ++p) acc[p] = fma(x[p][v * W + w], e[w], acc[p]);
        }
#pragma unroll
        for (int p = 0; p < P; ++p)
            if (j == 0 || acc[p] < best[p]) { best[p] = acc[p]; label[p] = j; }
    }
}

template <typename T, int MAXD>
__device__ void load_centres(const T* __restrict__ cm2_g, const T* __restrict__ csq_g, int k,
                             T* cm2, T* csq) {
    for (int e = threadIdx.x; e < k * MAXD; e += blockDim.x) cm2[e] = cm2_g[e];
    for (int e = threadIdx.x; e < k; e += blockDim.x) csq[e] = csq_g[e];
}

// Exact squared distance to centre `label` (cm2 holds -2*centre).
template <typename T, int MAXD>
__device__ __forceinline__ T sqdist_to(const T (&x)[MAXD], const T* __restrict__ cm2, int label) {
    const T* c = cm2 + label * MAXD;
    T dist = T(0);
#pragma unroll
    for (int f = 0; f < MAXD; ++f) {
        const T diff = x[f] + T(0.5) * c[f];
        dist = fma(diff, diff, dist);
    }
    return dist;
}

// Accumulation modes (a runtime argument, uniform across the launch):
//   0: warp-aggregated: lanes with the same label are summed with shuffles
//      and one lane per label adds into the warp's accumulator copy, so no
//      two lanes of a warp touch one address (plain adds when each warp has
//      its own copy, atomics otherwise);
//   1: one shared-memory atomic per point and feature (for comparison);
//   2: no accumulation, assignment and inertia only (for comparison).
// The staged kernels (STAGED, a candidate, chosen by the host only when asked
// for) aggregate as mode 0 in the same order, but each lane first stores its
// point in the warp's rows of shared memory and the leaders read their peers
// back with vector loads instead of one shuffle per value and round.
//
// Shared memory: [cm2: k*MAXD T][csq: k T][acc: copies*k*(d+1) T][red: blockDim double]
// (staged: [cm2][csq][acc][stage: blockDim rows of MAXD + W T][red]).
template <typename T, int MAXD> struct StageRow { static constexpr int value = MAXD + Vec<T>::width; };

template <typename T, int MAXD, bool STAGED = false>
__device__ void lloyd_step(const T* __restrict__ X, long long n, int d, int ld,
                           const T* __restrict__ cm2_g, const T* __restrict__ csq_g, int k,
                           int copies, long long points_per_block, int mode, double* __restrict__ partials) {
    extern __shared__ __align__(16) unsigned char smem[];
    T* cm2 = reinterpret_cast<T*>(smem);
    T* csq = cm2 + k * MAXD;
    T* acc = csq + k;
    const int stride = d + 1;
    const int acc_len = copies * k * stride;
    double* red = reinterpret_cast<double*>(
        smem + ((((size_t)(k * MAXD + k + acc_len) * sizeof(T)) + 15) & ~(size_t)15));
    T* stage = nullptr;
    if constexpr (STAGED) {
        stage = reinterpret_cast<T*>(red);
        red = reinterpret_cast<double*>(stage + (size_t)blockDim.x * StageRow<T, MAXD>::value);
    }

    load_centres<T, MAXD>(cm2_g, csq_g, k, cm2, csq);
    for (int e = threadIdx.x; e < acc_len; e += blockDim.x) acc[e] = T(0);
    __syncthreads();

    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int n_warps = blockDim.x / 32;
    const bool private_copy = copies >= n_warps;
    T* mine = acc + (warp % copies) * k * stride;
    const long long begin = (long long)blockIdx.x * points_per_block;
    long long end = begin + points_per_block;
    if (end > n) end = n;
    double inertia = 0.0;
    constexpr int P = PointsPerThread<MAXD>::value;
    // The loop bound is uniform across the block, so whole warps stay together
    // for the warp-level operations; rows past the end are masked.
    for (long long base = begin; base < end; base += (long long)P * blockDim.x) {
        T x[P][MAXD];
        bool valid[P];
        load_rows<T, MAXD, P>(X, base, end, ld, x, valid);
        int label[P];
        nearest<T, MAXD, P>(x, cm2, csq, k, label);
#pragma unroll
        for (int p = 0; p < P; ++p) {
            if (!valid[p]) label[p] = -1;
            else inertia += (double)sqdist_to<T, MAXD>(x[p], cm2, label[p]);
        }
        if (mode == 2) continue;
#pragma unroll
        for (int p = 0; p < P; ++p) {
            if constexpr (STAGED) {
                typedef typename Vec<T>::type V;
                constexpr int W = Vec<T>::width;
                constexpr int SROW = StageRow<T, MAXD>::value;
                T* rows = stage + (size_t)(warp * 32) * SROW;
                V* own = reinterpret_cast<V*>(rows + lane * SROW);
#pragma unroll
                for (int v = 0; v < MAXD / W; ++v) {
                    V q;
                    T* e = reinterpret_cast<T*>(&q);
#pragma unroll
                    for (int w = 0; w < W; ++w) e[w] = x[p][v * W + w];
                    own[v] = q;
                }
                __syncwarp();
                const unsigned peers = __match_any_sync(0xffffffffu, label[p]);
                if (valid[p] && lane == __ffs(peers) - 1) {
                    T sum[MAXD];
#pragma unroll
                    for (int f = 0; f < MAXD; ++f) sum[f] = x[p][f];
                    // The peers in ascending lane order, as mode 0 adds them.
                    for (unsigned rest = peers & (peers - 1); rest; rest &= rest - 1) {
                        const V* row = reinterpret_cast<const V*>(rows + (__ffs(rest) - 1) * SROW);
#pragma unroll
                        for (int v = 0; v < MAXD / W; ++v) {
                            const V q = row[v];
                            const T* e = reinterpret_cast<const T*>(&q);
#pragma unroll
                            for (int w = 0; w < W; ++w) sum[v * W + w] += e[w];
                        }
                    }
                    T* s = mine + label[p] * stride;
                    const int size = __popc(peers);
                    if (private_copy) {
#pragma unroll
                        for (int f = 0; f < MAXD; ++f)
                            if (f < d) s[f] += sum[f];
                        s[d] += T(size);
                    } else {
#pragma unroll
                        for (int f = 0; f < MAXD; ++f)
                            if (f < d) atomicAdd(s + f, sum[f]);
                        atomicAdd(s + d, T(size));
                    }
                }
                __syncwarp();  // the rows are rewritten for the next point
                continue;
            }
            if (mode == 1) {
                if (valid[p]) {
                    T* s = mine + label[p] * stride;
#pragma unroll
                    for (int f = 0; f < MAXD; ++f)
                        if (f < d) atomicAdd(s + f, x[p][f]);
                    atomicAdd(s + d, T(1));
                }
                continue;
            }
            const unsigned peers = __match_any_sync(0xffffffffu, label[p]);
            const int leader = __ffs(peers) - 1;
            const int size = __popc(peers);
            const int max_size = warp_max(size);
            T sum[MAXD];
#pragma unroll
            for (int f = 0; f < MAXD; ++f) sum[f] = x[p][f];
            unsigned rest = peers & (peers - 1);  // the group minus its leader
            for (int r = 1; r < max_size; ++r) {
                const int src = rest ? __ffs(rest) - 1 : lane;
                rest &= rest - 1;
#pragma unroll
                for (int f = 0; f < MAXD; ++f) {
                    const T v = __shfl_sync(0xffffffffu, x[p][f], src);
                    if (src != lane) sum[f] += v;
                }
            }
            if (valid[p] && lane == leader) {
                T* s = mine + label[p] * stride;
                if (private_copy) {
#pragma unroll
                    for (int f = 0; f < MAXD; ++f)
                        if (f < d) s[f] += sum[f];
                    s[d] += T(size);
                } else {
#pragma unroll
                    for (int f = 0; f < MAXD; ++f)
                        if (f < d) atomicAdd(s + f, sum[f]);
                    atomicAdd(s + d, T(size));
                }
            }
        }
    }
    red[threadIdx.x] = inertia;
    __syncthreads();

    double* out = partials + (size_t)blockIdx.x * (size_t)(k * stride + 1);
    for (int e = threadIdx.x; e < k * stride; e += blockDim.x) {
        double total = 0.0;
        for (int c = 0; c < copies; ++c) total += (double)acc[c * k * stride + e];
        out[e] = total;
    }
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[k * stride] = red[0];
}

// Labels and exact squared distances to the nearest centre.
template <typename T, int MAXD>
__device__ void assign(const T* __restrict__ X, long long n, int ld,
                       const T* __restrict__ cm2_g, const T* __restrict__ csq_g, int k,
                       int* __restrict__ labels, T* __restrict__ sqdist) {
    extern __shared__ __align__(16) unsigned char smem[];
    T* cm2 = reinterpret_cast<T*>(smem);
    T* csq = cm2 + k * MAXD;
    load_centres<T, MAXD>(cm2_g, csq_g, k, cm2, csq);
    __syncthreads();
    constexpr int P = PointsPerThread<MAXD>::value;
    const long long step = (long long)gridDim.x * blockDim.x * P;
    for (long long base = (long long)blockIdx.x * blockDim.x * P; base < n; base += step) {
        T x[P][MAXD];
        bool valid[P];
        load_rows<T, MAXD, P>(X, base, n, ld, x, valid);
        int label[P];
        nearest<T, MAXD, P>(x, cm2, csq, k, label);
#pragma unroll
        for (int p = 0; p < P; ++p) {
            const long long i = base + (long long)p * blockDim.x + threadIdx.x;
            if (i < n) {
                labels[i] = label[p];
                sqdist[i] = sqdist_to<T, MAXD>(x[p], cm2, label[p]);  // direct: no cancellation
            }
        }
    }
}

#define GPUSEG_KERNELS(T, NAME, MAXD)                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                              \
    lloyd_step_##NAME##_d##MAXD(const T* X, long long n, int d, int ld, const T* cm2,              \
                                const T* csq, int k, int copies, long long points_per_block,       \
                                int mode, double* partials) {                                      \
        lloyd_step<T, MAXD>(X, n, d, ld, cm2, csq, k, copies, points_per_block, mode, partials);   \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                              \
    lloyd_step_staged_##NAME##_d##MAXD(const T* X, long long n, int d, int ld, const T* cm2,       \
                                       const T* csq, int k, int copies, long long points_per_block,\
                                       int mode, double* partials) {                               \
        lloyd_step<T, MAXD, true>(X, n, d, ld, cm2, csq, k, copies, points_per_block, mode,        \
                                  partials);                                                       \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                              \
    assign_##NAME##_d##MAXD(const T* X, long long n, int ld, const T* cm2, const T* csq, int k,    \
                            int* labels, T* sqdist) {                                              \
        assign<T, MAXD>(X, n, ld, cm2, csq, k, labels, sqdist);                                    \
    }

GPUSEG_KERNELS(float, f32, 4)
GPUSEG_KERNELS(float, f32, 8)
GPUSEG_KERNELS(float, f32, 16)
GPUSEG_KERNELS(float, f32, 32)
GPUSEG_KERNELS(double, f64, 4)
GPUSEG_KERNELS(double, f64, 8)
GPUSEG_KERNELS(double, f64, 16)
GPUSEG_KERNELS(double, f64, 32)
