# C-level functions for the compiled build (setup.py); the .py is the code.
cpdef bytes relayed_status_line(int status, bytes reason_phrase)
