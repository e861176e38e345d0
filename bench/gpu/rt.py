"""rt: the runtime libraries snaptp needs on a machine that lacks them (the lent GPU
machines have no Open MPI, OpenBLAS, cJSON or utf8proc): Debian bookworm .debs
fetched beforehand by fetch_mpi_debs.sh, unpacked into a private root (never into /),
and the environment that makes the snaptp binary use them, and only it.

    python3 bench/gpu/rt.py [--debs .gpu/debs] [--root /tmp/snaptp-rt] -- CMD ARGS...

unpacks (once) and runs CMD with that environment; run_bench.py imports it.
"""
import argparse
import glob
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

MULTIARCH = "x86_64-linux-gnu"


def _extract_deb_python(deb, root):
    """dpkg -x without dpkg: a .deb is an ar archive holding data.tar.{xz,gz,zst}."""
    data = Path(deb).read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise RuntimeError(f"{deb}: not an ar archive")
    off = 8
    while off + 60 <= len(data):
        name = data[off:off + 16].decode().strip().rstrip("/")
        size = int(data[off + 48:off + 58].decode().strip())
        body = data[off + 60:off + 60 + size]
        off += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise RuntimeError(f"{deb}: zstd data and no dpkg to unpack it")
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tf:
                if hasattr(tarfile, "tar_filter"):  # Python >= 3.12: no path tricks
                    tf.extractall(root, filter="tar")
                else:
                    tf.extractall(root)
            return
    raise RuntimeError(f"{deb}: no data.tar member")


def unpack(debs_dir, root, log=print):
    """Unpacks every .deb of debs_dir into root (skipped when root/.done lists them)."""
    debs = sorted(glob.glob(os.path.join(debs_dir, "*.deb")))
    if not debs:
        raise RuntimeError(f"no .deb files in {debs_dir}: run bench/gpu/fetch_mpi_debs.sh "
                           "here and carry .gpu")
    root = Path(root)
    stamp = root / ".done"
    names = "\n".join(os.path.basename(d) for d in debs)
    if stamp.exists() and stamp.read_text() == names:
        return root
    root.mkdir(parents=True, exist_ok=True)
    have_dpkg = shutil.which("dpkg") is not None
    for d in debs:
        if have_dpkg:
            subprocess.run(["dpkg", "-x", d, str(root)], check=True)
        else:
            _extract_deb_python(d, root)
    stamp.write_text(names)
    log(f"rt: unpacked {len(debs)} .debs into {root} ({'dpkg -x' if have_dpkg else 'python'})")
    return root


def cuda_lib_dirs():
    """Where libcudart.so.13 / libcublas*.so.13 (and libnccl.so.2) may be on a machine
    with a CUDA toolkit or only PyTorch's wheels."""
    dirs = ["/usr/local/cuda/lib64", "/usr/local/cuda/lib",
            "/usr/local/cuda/targets/x86_64-linux/lib"]
    try:
        import nvidia  # the pip wheels PyTorch depends on
        for base in nvidia.__path__:
            dirs += sorted(glob.glob(os.path.join(base, "*", "lib")))
            dirs += sorted(glob.glob(os.path.join(base, "cu13", "lib")))
    except ImportError:
        pass
    return [d for d in dirs if os.path.isdir(d)]


def snaptp_env(root, base=None):
    """The environment for snaptp: the unpacked libraries first, Open MPI relocated to
    root (OPAL_PREFIX) and run as an isolated singleton (no mpirun, no orted), shared
    memory and self transports only (no UCX/verbs probing on a machine without a
    network fabric)."""
    r = Path(root)
    lib = [r / "usr/lib" / MULTIARCH, r / "lib" / MULTIARCH,
           r / "usr/lib" / MULTIARCH / "openmpi/lib", r / "usr/lib" / MULTIARCH / "openblas-pthread"]
    env = dict(base if base is not None else os.environ)
    paths = [str(p) for p in lib] + cuda_lib_dirs()
    if env.get("LD_LIBRARY_PATH"):
        paths.append(env["LD_LIBRARY_PATH"])
    env.update({
        "LD_LIBRARY_PATH": ":".join(paths),
        "OPAL_PREFIX": str(r / "usr"),
        "OMPI_MCA_ess_singleton_isolated": "1",
        "OMPI_MCA_pml": "ob1",
        "OMPI_MCA_btl": "self,vader",
        "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
        "OMPI_MCA_mca_base_component_show_load_errors": "0",
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    })
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--debs", default=".gpu/debs")
    ap.add_argument("--root", default="/tmp/snaptp-rt")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    root = unpack(a.debs, a.root, log=lambda m: print(m, file=sys.stderr))
    if not cmd:
        for k in ("LD_LIBRARY_PATH", "OPAL_PREFIX"):
            print(f"export {k}={snaptp_env(root)[k]}")
        return 0
    return subprocess.call(cmd, env=snaptp_env(root))


if __name__ == "__main__":
    sys.exit(main())
