/*
 * rlimit_clamp: LD_PRELOAD shim for pymachine's namespaced test hosts.
 *
 * Why: the test machine drops CAP_SYS_RESOURCE, so raising a *hard* rlimit
 * fails with EPERM.  Debian's /etc/init.d/docker runs `ulimit -n 1048576`
 * under `set -e` and dies on that.  Real servers allow it, so the fix belongs
 * in the test fixture, not in the provisioner: the test host's root lists this
 * library in /etc/ld.so.preload, and a refused attempt to raise a hard limit
 * is retried with the hard limit clamped to its current value.
 *
 * Only EPERM caused by a hard-limit raise is retried; every other call and
 * error passes through unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

/* The 64-bit variants share one layout on LP64 targets; the wrappers rely on it. */
_Static_assert(sizeof(struct rlimit) == sizeof(struct rlimit64), "rlimit64 layout differs");

typedef enum __rlimit_resource resource_t;
typedef int (*prlimit_fn)(pid_t, resource_t, const struct rlimit *, struct rlimit *);
typedef int (*setrlimit_fn)(__rlimit_resource_t, const struct rlimit *);

static prlimit_fn real_prlimit_fn(void) {
    static prlimit_fn fn;
    if (!fn)
        fn = (prlimit_fn)dlsym(RTLD_NEXT, "prlimit");
    return fn;
}

static setrlimit_fn real_setrlimit_fn(void) {
    static setrlimit_fn fn;
    if (!fn)
        fn = (setrlimit_fn)dlsym(RTLD_NEXT, "setrlimit");
    return fn;
}

/* Fill *out with `want` clamped to the current hard limit of `pid`.
 * Returns 1 when clamping changes the request, 0 otherwise. */
static int clamp_to_hard(pid_t pid, resource_t resource, const struct rlimit *want,
                         struct rlimit *out) {
    struct rlimit have;
    prlimit_fn real = real_prlimit_fn();
    if (!real || real(pid, resource, NULL, &have) != 0)
        return 0;
    if (want->rlim_max <= have.rlim_max)
        return 0;
    out->rlim_max = have.rlim_max;
    out->rlim_cur = want->rlim_cur < have.rlim_max ? want->rlim_cur : have.rlim_max;
    return 1;
}

int prlimit(pid_t pid, resource_t resource, const struct rlimit *new_limit,
            struct rlimit *old_limit) {
    prlimit_fn real = real_prlimit_fn();
    struct rlimit clamped;
    int rc, saved;
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    rc = real(pid, resource, new_limit, old_limit);
    if (rc == 0 || errno != EPERM || new_limit == NULL)
        return rc;
    saved = errno;
    if (!clamp_to_hard(pid, resource, new_limit, &clamped)) {
        errno = saved;
        return rc;
    }
    rc = real(pid, resource, &clamped, old_limit);
    if (rc != 0)
        errno = saved;
    return rc;
}

int prlimit64(pid_t pid, resource_t resource, const struct rlimit64 *new_limit,
              struct rlimit64 *old_limit) {
    return prlimit(pid, resource, (const struct rlimit *)new_limit, (struct rlimit *)old_limit);
}

int setrlimit(__rlimit_resource_t resource, const struct rlimit *limit) {
    setrlimit_fn real = real_setrlimit_fn();
    struct rlimit clamped;
    int rc, saved;
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    rc = real(resource, limit);
    if (rc == 0 || errno != EPERM)
        return rc;
    saved = errno;
    if (!clamp_to_hard(0, (resource_t)resource, limit, &clamped)) {
        errno = saved;
        return rc;
    }
    rc = real(resource, &clamped);
    if (rc != 0)
        errno = saved;
    return rc;
}

int setrlimit64(__rlimit_resource_t resource, const struct rlimit64 *limit) {
    return setrlimit(resource, (const struct rlimit *)limit);
}
