# Typed fields and C-level methods for the compiled build (setup.py); the .py is the code.
cdef class Target:
    cdef public object spec, ssl, server_hostname, idle
    cdef public str host, label
    cdef public int port
    cdef public double down_until

    cpdef take_idle(self, double now)
    cpdef put_idle(self, conn, double now)


cdef class Balancer:
    cdef public tuple targets
    cdef public bint single
    cdef public Py_ssize_t _next
