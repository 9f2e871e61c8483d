# Typed for the compiled build (setup.py); the .py is the code.  The passes over a
# response head's flat field list, with a C index (not a range of Python ints).
cimport cython
from porch.http.model cimport Headers

@cython.locals(flat=list, i=Py_ssize_t, found=dict)
cpdef dict _read(Headers headers)
@cython.locals(flat=list, i=Py_ssize_t)
cpdef _add_vary(Headers headers, vary)
