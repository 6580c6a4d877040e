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
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

// Weak: a process without the TSan runtime (ctest, bash, python) that inherits LD_PRELOAD
// never calls these, and must still start.
#pragma weak __tsan_mutex_pre_lock
#pragma weak __tsan_mutex_post_lock
#pragma weak __tsan_mutex_pre_unlock
#pragma weak __tsan_mutex_post_unlock
#pragma weak __tsan_acquire
#pragma weak __tsan_release

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

// The real AwaitWithTimeout may call AwaitWithDeadline through the PLT (so into the
// wrapper below): only the outermost wrapper on a thread annotates.
thread_local int depth = 0;
struct Outermost {
  Outermost() : outer(depth++ == 0) {}
  ~Outermost() { --depth; }
  const bool outer;
};

constexpr unsigned kRead = __tsan_mutex_read_lock;
constexpr unsigned kTry = __tsan_mutex_try_lock;
constexpr unsigned kTryFailed = __tsan_mutex_try_lock | __tsan_mutex_try_lock_failed;

}  // namespace

// Mangled names: absl 20220623 as Debian builds it (inline namespace debian3).
#define NS "N4absl7debian3"

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  const Outermost o;
  static auto real = Real<void (*)(Mutex*)>("_Z" NS "5Mutex4LockEv");
  if (o.outer) PreLock(this, 0);
  real(this);
  if (o.outer) PostLock(this, 0);
}

void Mutex::Unlock() {
  const Outermost o;
  static auto real = Real<void (*)(Mutex*)>("_Z" NS "5Mutex6UnlockEv");
  if (o.outer) PreUnlock(this, 0);
  real(this);
  if (o.outer) PostUnlock(this, 0);
}

bool Mutex::TryLock() {
  const Outermost o;
  static auto real = Real<bool (*)(Mutex*)>("_Z" NS "5Mutex7TryLockEv");
  if (o.outer) PreLock(this, kTry);
  const bool ok = real(this);
  if (o.outer) PostLock(this, ok ? kTry : kTryFailed);
  return ok;
}

void Mutex::ReaderLock() {
  const Outermost o;
  static auto real = Real<void (*)(Mutex*)>("_Z" NS "5Mutex10ReaderLockEv");
  if (o.outer) PreLock(this, kRead);
  real(this);
  if (o.outer) PostLock(this, kRead);
}

void Mutex::ReaderUnlock() {
  const Outermost o;
  static auto real = Real<void (*)(Mutex*)>("_Z" NS "5Mutex12ReaderUnlockEv");
  if (o.outer) PreUnlock(this, kRead);
  real(this);
  if (o.outer) PostUnlock(this, kRead);
}

bool Mutex::ReaderTryLock() {
  const Outermost o;
  static auto real = Real<bool (*)(Mutex*)>("_Z" NS "5Mutex13ReaderTryLockEv");
  if (o.outer) PreLock(this, kRead | kTry);
  const bool ok = real(this);
  if (o.outer) PostLock(this, ok ? kRead | kTry : kRead | kTryFailed);
  return ok;
}

void Mutex::LockWhen(const Condition& cond) {
  const Outermost o;
  static auto real =
      Real<void (*)(Mutex*, const Condition&)>("_Z" NS "5Mutex8LockWhenERKNS0_9ConditionE");
  if (o.outer) PreLock(this, 0);
  real(this, cond);
  if (o.outer) PostLock(this, 0);
}

// Await releases the mutex while it waits: to TSan, an unlock then a lock. The real call
// sits between pre- and post-unlock, where TSan ignores accesses: absl evaluates the
// Condition in there with the mutex held, which the model could not otherwise know.
void Mutex::Await(const Condition& cond) {
  const Outermost o;
  static auto real =
      Real<void (*)(Mutex*, const Condition&)>("_Z" NS "5Mutex5AwaitERKNS0_9ConditionE");
  if (o.outer) PreUnlock(this, 0);
  real(this, cond);
  if (o.outer) PostUnlock(this, 0);
  if (o.outer) PreLock(this, 0);
  if (o.outer) PostLock(this, 0);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  const Outermost o;
  static auto real = Real<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      "_Z" NS "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  if (o.outer) PreUnlock(this, 0);
  const bool ok = real(this, cond, timeout);
  if (o.outer) PostUnlock(this, 0);
  if (o.outer) PreLock(this, 0);
  if (o.outer) PostLock(this, 0);
  return ok;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  const Outermost o;
  static auto real = Real<bool (*)(Mutex*, const Condition&, absl::Time)>(
      "_Z" NS "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  if (o.outer) PreUnlock(this, 0);
  const bool ok = real(this, cond, deadline);
  if (o.outer) PostUnlock(this, 0);
  if (o.outer) PreLock(this, 0);
  if (o.outer) PostLock(this, 0);
  return ok;
}

void CondVar::Wait(Mutex* mu) {
  const Outermost o;
  static auto real = Real<void (*)(CondVar*, Mutex*)>("_Z" NS "7CondVar4WaitEPNS0_5MutexE");
  if (o.outer) PreUnlock(mu, 0);
  real(this, mu);
  if (o.outer) PostUnlock(mu, 0);
  if (o.outer) PreLock(mu, 0);
  if (o.outer) PostLock(mu, 0);
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  const Outermost o;
  static auto real = Real<bool (*)(CondVar*, Mutex*, absl::Duration)>(
      "_Z" NS "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  if (o.outer) PreUnlock(mu, 0);
  const bool ok = real(this, mu, timeout);
  if (o.outer) PostUnlock(mu, 0);
  if (o.outer) PreLock(mu, 0);
  if (o.outer) PostLock(mu, 0);
  return ok;
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  const Outermost o;
  static auto real = Real<bool (*)(CondVar*, Mutex*, absl::Time)>(
      "_Z" NS "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  if (o.outer) PreUnlock(mu, 0);
  const bool ok = real(this, mu, deadline);
  if (o.outer) PostUnlock(mu, 0);
  if (o.outer) PreLock(mu, 0);
  if (o.outer) PostLock(mu, 0);
  return ok;
}

// Notify happens-before every wait that sees it (the .so locks its own mutex inside).
void Notification::Notify() {
  static auto real = Real<void (*)(Notification*)>("_Z" NS "12Notification6NotifyEv");
  if (Tsan()) __tsan_release(this);
  real(this);
}

void Notification::WaitForNotification() const {
  static auto real =
      Real<void (*)(const Notification*)>("_ZNK4absl7debian312Notification19WaitForNotificationEv");
  real(this);
  if (Tsan()) __tsan_acquire(const_cast<Notification*>(this));
}

bool Notification::WaitForNotificationWithTimeout(absl::Duration timeout) const {
  static auto real = Real<bool (*)(const Notification*, absl::Duration)>(
      "_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool ok = real(this, timeout);
  if (ok && Tsan()) __tsan_acquire(const_cast<Notification*>(this));
  return ok;
}

bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  static auto real = Real<bool (*)(const Notification*, absl::Time)>(
      "_ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  const bool ok = real(this, deadline);
  if (ok && Tsan()) __tsan_acquire(const_cast<Notification*>(this));
  return ok;
}

ABSL_NAMESPACE_END
}  // namespace absl
