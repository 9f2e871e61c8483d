# Typed fields and C-level methods for the compiled build (setup.py); the .py is the code.
cimport cython

cdef class Pooled:
    cdef public double idle_since

    cpdef bint is_usable(self)
    cpdef release(self)
    cpdef close(self)


cdef class Target:
    cdef public object spec, ssl, server_hostname, error_log
    cdef public list idle
    cdef public str host, label, address
    cdef public int port, fails
    cdef public long long failures
    cdef public str last_error
    cdef public Py_ssize_t active
    cdef public bint probe_up
    cdef public double down_until, fail_start

    @cython.locals(idle=list, conn=Pooled)
    cpdef take_idle(self, double now)
    cpdef put_idle(self, Pooled conn, double now)


cdef class Balancer:
    cdef public tuple targets, weights, seeds
    cdef public bint single
    cdef public Py_ssize_t tries, max_fails
    cdef public str mode
    cdef public list current
    cdef public double fail_timeout
    cdef public object sticky, rng
