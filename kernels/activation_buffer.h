// Memory for activations: 64-byte aligned (what oneDNN's kernels want) and, from 2 MiB up,
// backed by transparent huge pages where the kernel offers them on request
// (/sys/kernel/mm/transparent_hugepage/enabled = madvise, Debian's default). Touching a
// fresh 4 KiB page costs a fault; on the virtual machines this was measured on, faulting
// in a ResNet-18 stem activation of 16 samples (51 MB) took ~145 ms, longer than
// computing it, and huge pages cut the faults 512-fold.
#ifndef NORMSERVE_KERNELS_ACTIVATION_BUFFER_H_
#define NORMSERVE_KERNELS_ACTIVATION_BUFFER_H_

#include <cstddef>
#include <cstdlib>
#include <memory>

namespace normserve {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using ActivationBuffer = std::unique_ptr<void, FreeDeleter>;

// At least `bytes` (at least 64); null when out of memory. Contents uninitialized.
ActivationBuffer AllocateActivations(size_t bytes);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_ACTIVATION_BUFFER_H_
