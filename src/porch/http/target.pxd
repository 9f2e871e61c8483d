# C types for the compiled build (setup.py); the .py is the code.
cimport cython

@cython.locals(c=cython.uchar, prev=cython.uchar)
cpdef bint needs_a_look(bytes path)
