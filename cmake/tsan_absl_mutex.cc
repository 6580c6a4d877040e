// TSan-only LD_PRELOAD shim: tells ThreadSanitizer about absl::Mutex. Debian's Abseil is
// not TSan-instrumented and its Mutex locks with atomics and futexes inside the .so, which
// TSan cannot see: without this every ABSL_GUARDED_BY member would race in its reports.
// Each wrapper calls the real function (dlsym RTLD_NEXT) between the
// __tsan_mutex_pre_*/post_* annotations of <sanitizer/tsan_interface.h>. Built and
// preloaded only by the TSan build (cmake/Sanitizers.cmake, scripts/run_tests.sh).
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

// Weak: a process without the TSan runtime (ctest, bash, python) that inherits LD_PRELOAD
// never calls these, and must still start.
#pragma weak __tsan_mutex_pre_lock
#pragma weak __tsan_mutex_post_lock
#pragma weak __tsan_mutex_pre_unlock
#pragma weak __tsan_mutex_post_unlock

namespace {

template <typename Fn>
Fn Real(const char* mangled) {
  void* f = dlsym(RTLD_NEXT, mangled);
  if (f == nullptr) {
    std::fprintf(stderr, "tsan_absl_mutex: %s not found\n", mangled);
    std::abort();
  }
  return reinterpret_cast<Fn>(f);
}

bool Tsan() { return &__tsan_mutex_pre_lock != nullptr; }

void PreLock(void* m, unsigned flags) {
  if (Tsan()) __tsan_mutex_pre_lock(m, flags);
}
void PostLock(void* m, unsigned flags) {
  if (Tsan()) __tsan_mutex_post_lock(m, flags, 0);
}
void PreUnlock(void* m, unsigned flags) {
  if (Tsan()) __tsan_mutex_pre_unlock(m, flags);
}
void PostUnlock(void* m, unsigned flags) {
  if (Tsan()) __tsan_mutex_post_unlock(m, flags);
}

constexpr unsigned kRead = __tsan_mutex_read_lock;
constexpr unsigned kTry = __tsan_mutex_try_lock;
constexpr unsigned kTryFailed = __tsan_mutex_try_lock | __tsan_mutex_try_lock_failed;

}  // namespace

// Mangled names: absl 20220623 as Debian builds it (inline namespace debian3).
#define NS "N4absl7debian3"

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static auto real = Real<void (*)(Mutex*)>("_Z" NS "5Mutex4LockEv");
  PreLock(this, 0);
  real(this);
  PostLock(this, 0);
}

void Mutex::Unlock() {
  static auto real = Real<void (*)(Mutex*)>("_Z" NS "5Mutex6UnlockEv");
  PreUnlock(this, 0);
  real(this);
  PostUnlock(this, 0);
}

bool Mutex::TryLock() {
  static auto real = Real<bool (*)(Mutex*)>("_Z" NS "5Mutex7TryLockEv");
  PreLock(this, kTry);
  const bool ok = real(this);
  PostLock(this, ok ? kTry : kTryFailed);
  return ok;
}

void Mutex::ReaderLock() {
  static auto real = Real<void (*)(Mutex*)>("_Z" NS "5Mutex10ReaderLockEv");
  PreLock(this, kRead);
  real(this);
  PostLock(this, kRead);
}

void Mutex::ReaderUnlock() {
  static auto real = Real<void (*)(Mutex*)>("_Z" NS "5Mutex12ReaderUnlockEv");
  PreUnlock(this, kRead);
  real(this);
  PostUnlock(this, kRead);
}

bool Mutex::ReaderTryLock() {
  static auto real = Real<bool (*)(Mutex*)>("_Z" NS "5Mutex13ReaderTryLockEv");
  PreLock(this, kRead | kTry);
  const bool ok = real(this);
  PostLock(this, ok ? kRead | kTry : kRead | kTryFailed);
  return ok;
}

void Mutex::LockWhen(const Condition& cond) {
  static auto real =
      Real<void (*)(Mutex*, const Condition&)>("_Z" NS "5Mutex8LockWhenERKNS0_9ConditionE");
  PreLock(this, 0);
  real(this, cond);
  PostLock(this, 0);
}

// Await releases the mutex while it waits: to TSan, an unlock then a lock.
void Mutex::Await(const Condition& cond) {
  static auto real =
      Real<void (*)(Mutex*, const Condition&)>("_Z" NS "5Mutex5AwaitERKNS0_9ConditionE");
  PreUnlock(this, 0);
  PostUnlock(this, 0);
  real(this, cond);
  PreLock(this, 0);
  PostLock(this, 0);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      "_Z" NS "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  PreUnlock(this, 0);
  PostUnlock(this, 0);
  const bool ok = real(this, cond, timeout);
  PreLock(this, 0);
  PostLock(this, 0);
  return ok;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, absl::Time)>(
      "_Z" NS "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  PreUnlock(this, 0);
  PostUnlock(this, 0);
  const bool ok = real(this, cond, deadline);
  PreLock(this, 0);
  PostLock(this, 0);
  return ok;
}

void CondVar::Wait(Mutex* mu) {
  static auto real = Real<void (*)(CondVar*, Mutex*)>("_Z" NS "7CondVar4WaitEPNS0_5MutexE");
  PreUnlock(mu, 0);
  PostUnlock(mu, 0);
  real(this, mu);
  PreLock(mu, 0);
  PostLock(mu, 0);
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  static auto real = Real<bool (*)(CondVar*, Mutex*, absl::Duration)>(
      "_Z" NS "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  PreUnlock(mu, 0);
  PostUnlock(mu, 0);
  const bool ok = real(this, mu, timeout);
  PreLock(mu, 0);
  PostLock(mu, 0);
  return ok;
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  static auto real = Real<bool (*)(CondVar*, Mutex*, absl::Time)>(
      "_Z" NS "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  PreUnlock(mu, 0);
  PostUnlock(mu, 0);
  const bool ok = real(this, mu, deadline);
  PreLock(mu, 0);
  PostLock(mu, 0);
  return ok;
}

ABSL_NAMESPACE_END
}  // namespace absl
