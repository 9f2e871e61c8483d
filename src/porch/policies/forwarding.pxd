# Typed for the compiled build (setup.py); the .py is the code.  The exchange
# (server/proxy.py) and the client connection call these with C-typed arguments.

cpdef bytes connection_part(str peer_ip, bytes scheme, bytes local_port)
cpdef bytes trusted_part(str peer_ip, bytes scheme, bytes local_port, object host_header, str client_ip,
                         object xff, object xf_proto, object xf_host, object xf_port)
