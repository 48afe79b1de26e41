"""faceid's server.

numpy's and scipy's OpenBLAS read OPENBLAS_NUM_THREADS once, when they load, which in a server started by uvicorn
(`app.main:create_app`) is after this: one thread unless FACEID_BLAS_THREADS (or OPENBLAS_NUM_THREADS) says
otherwise. `app.main.build_service` sets the same limit again for a process that loaded them first."""
import os

if os.environ.get("FACEID_BLAS_THREADS", "1") != "0":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", os.environ.get("FACEID_BLAS_THREADS", "1"))
