# Typed fields for the compiled build (setup.py); the .py is the code.
cdef class LogRecord:
    cdef public str client_ip, host, site, route, upstream
    cdef public bytes port, method, target, version, referer, user_agent, request_id
    cdef public object user, error
    cdef public int status, upstream_status
    cdef public long long bytes_in, bytes_out
    cdef public double t_start, t_upstream_connect, t_upstream_header
