// RETURN_IF_ERROR / ASSIGN_OR_RETURN: Debian's Abseil 20220623 ships no status_macros.h,
// so the project keeps the TF Serving / Triton shape of these two helpers here.
#ifndef NORMSERVE_KERNELS_STATUS_MACROS_H_
#define NORMSERVE_KERNELS_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define NS_CONCAT_INNER_(a, b) a##b
#define NS_CONCAT_(a, b) NS_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                \
  do {                                       \
    ::absl::Status ns_status_ = (expr);      \
    if (!ns_status_.ok()) return ns_status_; \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(NS_CONCAT_(ns_statusor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                           \
  if (!statusor.ok()) return statusor.status();     \
  lhs = std::move(statusor).value()

#endif  // NORMSERVE_KERNELS_STATUS_MACROS_H_
