# Typed fields for the compiled build (setup.py); the .py is the code.  A field added
# to a class in runtime.py must be declared here too.
from porch.observability.accesslog cimport AccessLog
from porch.observability.stats cimport RouteStats
from porch.routing cimport HostTable, PathTable
from porch.upstream.pool cimport Balancer
from porch.pipeline cimport Chain


cdef class RouteRuntime:
    cdef public str site, path
    cdef public Balancer balancer
    cdef public object upstream_host, max_body, location_rewrite
    cdef public bytes base_path
    cdef public object plain_upstream
    cdef public int proxy_protocol
    cdef public double body_timeout, upstream_connect_timeout, upstream_timeout, tunnel_idle_timeout
    cdef public Chain chain
    cdef public AccessLog access_log
    cdef public object error_log
    cdef public RouteStats stats


cdef class SiteRuntime:
    cdef public str name
    cdef public PathTable paths
    cdef public RouteRuntime root_only
    cdef public Chain chain


cdef class Runtime:
    cdef public HostTable hosts
    cdef public dict listener_hosts
    cdef public object trusted, error_log, targets, tls, health
    cdef public str http2_engine
    cdef public double header_timeout, keepalive_timeout, shutdown_timeout, send_timeout
    cdef public Py_ssize_t max_header_size, max_concurrent_streams
    cdef public AccessLog access_log
    cdef public RouteStats stats
    cdef public tuple access_logs, error_logs, routes
    cdef public object metrics
    cdef public bytes scheme
    cdef public bint underscores_in_headers
    cdef public frozenset identity_headers
    cdef public object header_kinds
    cdef public dict header_seen
