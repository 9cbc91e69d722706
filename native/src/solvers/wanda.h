#pragma once
#include <cstddef>

#include "common/linalg.h"

namespace sparsellm {
// Wanda score S_ij = |W_ij| * sqrt(scaler_j), scaler_j = Σ_tokens x_j² / nsequences (Wanda's
// scaler_row; equals H_jj / 2 for the SparseGPT Hessian H = 2/nseq Σ x xᵀ — any positive
// constant factor gives the same mask).
//  unstructured: per OUTPUT ROW prune exactly int(cols*s) smallest scores (stable order: ties -> lower index);
//  N:M: per row, in every group of M inputs prune the N smallest scores.
size_t WandaPrune(float* W, size_t rows, size_t cols, const float* scaler, const Sparsity& sp);

// scaler <- scaler * nOld/nNew + Σ_rows X[r,j]² / nNew  (X [rows, cols] token-major).
void WandaScalerAccumulate(float* scaler, const float* X, size_t rows, size_t cols, double nOld, double nNew);
}  // namespace sparsellm
