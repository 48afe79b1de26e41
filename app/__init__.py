"""faceid's server.

numpy's and scipy's OpenBLAS read OPENBLAS_NUM_THREADS once, when they load, which in a server started by uvicorn
(`app.main:create_app`) is after this: one thread (FACEID_BLAS_THREADS, default 1) unless OPENBLAS_NUM_THREADS is
set already, which is then the operator's and left alone. `app.main.limit_blas_threads` applies the setting again
once it is read (it may come from `.env`) and takes the variable back out of the environment, so that the processes
the server starts (training jobs) get the libraries' default."""
import os

BLAS_ENV_SET = False  # whether OPENBLAS_NUM_THREADS is this module's
if "OPENBLAS_NUM_THREADS" not in os.environ and os.environ.get("FACEID_BLAS_THREADS", "1") != "0":
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ.get("FACEID_BLAS_THREADS", "1")
    BLAS_ENV_SET = True
