#pragma once

namespace sparsellm {
// Flush denormals to zero in the calling thread (long solver loops with tiny values).
void EnableFlushToZero();
}  // namespace sparsellm
