// Q·x and its gradients on the CPU, one Givens rotation at a time, on tiles kept in cache.
//
// Why: PyTorch ops cannot apply a 2 × 2 rotation to two coordinates of every row without a
// gather or a dense block per level (16 multiply-adds per coordinate per level); this applies
// each rotation as it is (6 flops per row), and every step of a tile (the reflection pairs, all
// Givens stages, and in backward the walk back) runs on one feature-major tile of ROWS rows that
// stays in the core's cache, so the activations are read once and written once.
//
// Q = G_K ⋯ G_1 · P_M ⋯ P_1: P_k = I + U_k W_k (a Householder pair as a rank-2 update, the rows
// e, b, w0, w1 of updates[k]); G: rotation a mixes coordinates first[a] and second[a] by angle a,
// y_p = c·x_p − s·x_q, y_q = s·x_p + c·x_q, in angle order (stages are consecutive runs).
// Backward recomputes a tile's forward, then walks the rotations back: ∂θ_a = Σ_t ∂y_q·y_p − ∂y_p·y_q,
// and each rotation's input is recovered from its output by its transpose (no copy kept); the
// pairs' inputs are kept (a few tile copies). Arithmetic is fp32; x and ∂y may be any float dtype.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

// Rows per tile (set by native.py): one coordinate of a tile is ROWS contiguous floats, one AVX2
// register at 8.
#ifndef ROPO_ROWS
#define ROPO_ROWS 8
#endif
constexpr int64_t ROWS = ROPO_ROWS;

struct Operands {
  int64_t dim, pairs, angles;
  const float* updates;  // (pairs, 4, dim)
  const int32_t* first;
  const int32_t* second;
  const float* cos;
  const float* sin;
};

template <typename T>
void load_tile(const T* rows, int64_t count, int64_t dim, float* tile) {
  for (int64_t r = 0; r < count; ++r)
    for (int64_t j = 0; j < dim; ++j) tile[j * ROWS + r] = static_cast<float>(rows[r * dim + j]);
  for (int64_t r = count; r < ROWS; ++r)
    for (int64_t j = 0; j < dim; ++j) tile[j * ROWS + r] = 0.f;
}

template <typename T>
void store_tile(const float* tile, int64_t count, int64_t dim, T* rows) {
  for (int64_t r = 0; r < count; ++r)
    for (int64_t j = 0; j < dim; ++j) rows[r * dim + j] = static_cast<T>(tile[j * ROWS + r]);
}

// Σ_j v0[j]·tile[j] and Σ_j v1[j]·tile[j] per row, in one pass over the tile.
void project2(const float* v0, const float* v1, const float* tile, int64_t dim, float* out0, float* out1) {
  for (int64_t r = 0; r < ROWS; ++r) out0[r] = out1[r] = 0.f;
  for (int64_t j = 0; j < dim; ++j) {
    const float* t = tile + j * ROWS;
    const float a = v0[j], b = v1[j];
#pragma omp simd
    for (int64_t r = 0; r < ROWS; ++r) {
      out0[r] += a * t[r];
      out1[r] += b * t[r];
    }
  }
}

// tile[j] += a[j]·ca + b[j]·cb per row.
void add_rank2(float* tile, const float* a, const float* ca, const float* b, const float* cb, int64_t dim) {
  for (int64_t j = 0; j < dim; ++j) {
    float* t = tile + j * ROWS;
    const float aj = a[j], bj = b[j];
#pragma omp simd
    for (int64_t r = 0; r < ROWS; ++r) t[r] += aj * ca[r] + bj * cb[r];
  }
}

// Q·x on a tile; with `kept`, each pair's input is copied there first (backward needs it).
void rotate_tile(const Operands& op, float* tile, float* kept) {
  float c0[ROWS], c1[ROWS];
  for (int64_t k = 0; k < op.pairs; ++k) {
    const float* u = op.updates + k * 4 * op.dim;
    if (kept) std::copy(tile, tile + op.dim * ROWS, kept + k * op.dim * ROWS);
    project2(u + 2 * op.dim, u + 3 * op.dim, tile, op.dim, c0, c1);
    add_rank2(tile, u, c0, u + op.dim, c1, op.dim);
  }
  for (int64_t a = 0; a < op.angles; ++a) {
    float* p = tile + op.first[a] * ROWS;
    float* q = tile + op.second[a] * ROWS;
    const float c = op.cos[a], s = op.sin[a];
#pragma omp simd
    for (int64_t r = 0; r < ROWS; ++r) {
      const float xp = p[r], xq = q[r];
      p[r] = c * xp - s * xq;
      q[r] = s * xp + c * xq;
    }
  }
}

// Walks a tile back: `tile` holds Q·x, `grad` ∂y (both feature-major); on return `grad` holds
// ∂x. Adds into angle_grad (angles, ROWS) and update_grad (pairs, 4, dim, ROWS): one sum per
// row lane, reduced once at the end (a horizontal sum per angle and tile would cost more than the
// rotation).
void backward_tile(const Operands& op, float* tile, float* grad, const float* kept, float* angle_grad,
                   float* update_grad) {
  for (int64_t a = op.angles - 1; a >= 0; --a) {
    float* yp = tile + op.first[a] * ROWS;
    float* yq = tile + op.second[a] * ROWS;
    float* gp = grad + op.first[a] * ROWS;
    float* gq = grad + op.second[a] * ROWS;
    float* dtheta = angle_grad + a * ROWS;
    const float c = op.cos[a], s = op.sin[a];
#pragma omp simd
    for (int64_t r = 0; r < ROWS; ++r) {
      const float p = yp[r], q = yq[r], dp = gp[r], dq = gq[r];
      dtheta[r] += dq * p - dp * q;
      yp[r] = c * p + s * q;
      yq[r] = c * q - s * p;
      gp[r] = c * dp + s * dq;
      gq[r] = c * dq - s * dp;
    }
  }
  float c0[ROWS], c1[ROWS], p0[ROWS], p1[ROWS];
  for (int64_t k = op.pairs - 1; k >= 0; --k) {
    const float* u = op.updates + k * 4 * op.dim;
    const float* x = kept + k * op.dim * ROWS;
    float* du = update_grad + k * 4 * op.dim * ROWS;
    // y = x + e·(w0·x) + b·(w1·x): ∂e = Σ_t ∂y (w0·x), ∂b = Σ_t ∂y (w1·x), ∂w0 = Σ_t x (e·∂y),
    // ∂w1 = Σ_t x (b·∂y), ∂x = ∂y + w0 (e·∂y) + w1 (b·∂y).
    project2(u + 2 * op.dim, u + 3 * op.dim, x, op.dim, c0, c1);
    project2(u, u + op.dim, grad, op.dim, p0, p1);
    for (int64_t j = 0; j < op.dim; ++j) {
      float* g = grad + j * ROWS;
      const float* xj = x + j * ROWS;
      float* de = du + j * ROWS;
      float* db = du + (op.dim + j) * ROWS;
      float* dw0 = du + (2 * op.dim + j) * ROWS;
      float* dw1 = du + (3 * op.dim + j) * ROWS;
      const float w0 = u[2 * op.dim + j], w1 = u[3 * op.dim + j];
#pragma omp simd
      for (int64_t r = 0; r < ROWS; ++r) {
        de[r] += g[r] * c0[r];
        db[r] += g[r] * c1[r];
        dw0[r] += xj[r] * p0[r];
        dw1[r] += xj[r] * p1[r];
        g[r] += w0 * p0[r] + w1 * p1[r];
      }
    }
  }
}

Operands operands(const at::Tensor& updates, const at::Tensor& first, const at::Tensor& second,
                  const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(updates.scalar_type() == at::kFloat && cos.scalar_type() == at::kFloat, "fp32 operands expected");
  TORCH_CHECK(updates.is_contiguous() && first.is_contiguous() && second.is_contiguous(), "contiguous operands expected");
  return {updates.size(2), updates.size(0), cos.numel(), updates.data_ptr<float>(), first.data_ptr<int32_t>(),
          second.data_ptr<int32_t>(), cos.data_ptr<float>(), sin.data_ptr<float>()};
}

int64_t tiles_of(int64_t rows) { return (rows + ROWS - 1) / ROWS; }

at::Tensor forward(const at::Tensor& x, const at::Tensor& updates, const at::Tensor& first,
                   const at::Tensor& second, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "x must be a contiguous (rows, dim) tensor");
  const Operands op = operands(updates, first, second, cos, sin);
  const int64_t rows = x.size(0), dim = x.size(1);
  at::Tensor out = at::empty({rows, dim}, x.options().dtype(at::kFloat));
  float* out_data = out.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "ropo_rotate_forward", [&] {
    const scalar_t* x_data = x.data_ptr<scalar_t>();
    at::parallel_for(0, tiles_of(rows), 1, [&](int64_t begin, int64_t end) {
      std::vector<float> tile(dim * ROWS);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t start = t * ROWS, count = std::min(ROWS, rows - start);
        load_tile(x_data + start * dim, count, dim, tile.data());
        rotate_tile(op, tile.data(), nullptr);
        store_tile(tile.data(), count, dim, out_data + start * dim);
      }
    });
  });
  return out;
}

// Returns (∂x in x's dtype, or an empty tensor; ∂angles; ∂updates).
std::vector<at::Tensor> backward(const at::Tensor& x, const at::Tensor& grad_output, const at::Tensor& updates,
                                 const at::Tensor& first, const at::Tensor& second, const at::Tensor& cos,
                                 const at::Tensor& sin, bool input_grad) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && grad_output.is_contiguous(), "contiguous (rows, dim) tensors expected");
  TORCH_CHECK(grad_output.scalar_type() == at::kFloat, "fp32 output gradient expected");
  const Operands op = operands(updates, first, second, cos, sin);
  const int64_t rows = x.size(0), dim = x.size(1);
  const int64_t threads = at::get_num_threads();
  at::Tensor angle_partial = at::zeros({threads, op.angles, ROWS}, updates.options());
  at::Tensor update_partial = at::zeros({threads, op.pairs * 4 * dim, ROWS}, updates.options());
  at::Tensor grad_x = input_grad ? at::empty({rows, dim}, x.options()) : at::Tensor();
  const float* g_data = grad_output.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "ropo_rotate_backward", [&] {
    const scalar_t* x_data = x.data_ptr<scalar_t>();
    scalar_t* gx_data = input_grad ? grad_x.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, tiles_of(rows), 1, [&](int64_t begin, int64_t end) {
      const int64_t thread = at::get_thread_num();
      float* angle_grad = angle_partial.data_ptr<float>() + thread * op.angles * ROWS;
      float* update_grad = update_partial.data_ptr<float>() + thread * op.pairs * 4 * dim * ROWS;
      std::vector<float> tile(dim * ROWS), grad(dim * ROWS), kept(std::max<int64_t>(op.pairs, 1) * dim * ROWS);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t start = t * ROWS, count = std::min(ROWS, rows - start);
        load_tile(x_data + start * dim, count, dim, tile.data());
        rotate_tile(op, tile.data(), kept.data());
        load_tile(g_data + start * dim, count, dim, grad.data());
        backward_tile(op, tile.data(), grad.data(), kept.data(), angle_grad, update_grad);
        if (gx_data) store_tile(grad.data(), count, dim, gx_data + start * dim);
      }
    });
  });
  return {grad_x, angle_partial.sum({0, 2}), update_partial.sum({0, 2}).view_as(updates)};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "Q·x, rows of x rotated (fp32 result)");
  m.def("backward", &backward, "(∂x, ∂angles, ∂updates) of Q·x");
}
