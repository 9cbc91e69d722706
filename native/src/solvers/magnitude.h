#pragma once
#include <cstddef>

#include "common/linalg.h"

namespace sparsellm {
// Magnitude pruning of W [rows, cols] (row-major, in place).
//  unstructured: one threshold per MATRIX, thresh = sort(|W|)[int(numel*s)], prune |W| <= thresh
//                (so int(numel*s)+1 entries plus ties; s == 0 prunes nothing);
//  N:M: in every group of M consecutive inputs of a row, prune the N smallest |W| (ties -> lower index).
// Returns the number of zeroed entries.
size_t MagnitudePrune(float* W, size_t rows, size_t cols, const Sparsity& sp);
}  // namespace sparsellm
