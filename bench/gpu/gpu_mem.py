"""gpu_mem: peak GPU memory of another process (snaptp), sampled by a thread through
NVML (pynvml, from nvidia-ml-py), or nvidia-smi when NVML's Python binding is
missing. The caller marks segment boundaries (one per prompt length) and reads the
peak of each segment. Samples every 50 ms: a peak shorter than that can be missed,
so the numbers are lower bounds on the true peak.
"""
import shutil
import subprocess
import threading
import time


class GpuSampler:
    def __init__(self, pid, device_index=0, period_s=0.05):
        self.pid, self.period_s = pid, period_s
        self.lock = threading.Lock()
        self.seg_proc = self.seg_dev = 0  # bytes, peak within the current segment
        self.all_proc = self.all_dev = 0
        self.source = None
        self._stop = threading.Event()
        self._nvml = self._smi = None
        try:
            import pynvml
            pynvml.nvmlInit()
            self._nvml = pynvml
            self._h = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            self.source = "nvml"
        except Exception:  # no binding, no driver: fall back, or sample nothing
            if shutil.which("nvidia-smi"):
                self._smi = device_index
                self.source = "nvidia-smi"
        self.baseline_dev = self._device_used() if self.source else 0
        self._t = threading.Thread(target=self._run, daemon=True)
        if self.source:
            self._t.start()

    def _device_used(self):
        if self._nvml:
            return int(self._nvml.nvmlDeviceGetMemoryInfo(self._h).used)
        out = subprocess.run(["nvidia-smi", "-i", str(self._smi), "--query-gpu=memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True)
        return int(out.stdout.strip() or 0) << 20

    def _proc_used(self):
        if self._nvml:
            n = self._nvml
            for fn in ("nvmlDeviceGetComputeRunningProcesses_v3",
                       "nvmlDeviceGetComputeRunningProcesses_v2",
                       "nvmlDeviceGetComputeRunningProcesses"):
                f = getattr(n, fn, None)
                if f is None:
                    continue
                try:
                    for p in f(self._h):
                        if p.pid == self.pid and p.usedGpuMemory is not None:
                            return int(p.usedGpuMemory)
                    return 0
                except n.NVMLError:
                    continue
            return 0
        out = subprocess.run(["nvidia-smi", "-i", str(self._smi),
                              "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            parts = [x.strip() for x in line.split(",")]
            if len(parts) == 2 and parts[0] == str(self.pid) and parts[1].isdigit():
                return int(parts[1]) << 20
        return 0

    def _run(self):
        while not self._stop.is_set():
            try:
                proc, dev = self._proc_used(), self._device_used() - self.baseline_dev
            except Exception:
                proc, dev = 0, 0
            with self.lock:
                self.seg_proc, self.seg_dev = max(self.seg_proc, proc), max(self.seg_dev, dev)
                self.all_proc, self.all_dev = max(self.all_proc, proc), max(self.all_dev, dev)
            time.sleep(self.period_s)

    def mark(self):
        """Ends a segment: returns (peak of the process, peak device use over the
        baseline taken at start), in bytes, and starts the next segment."""
        with self.lock:
            r = (self.seg_proc, self.seg_dev)
            self.seg_proc = self.seg_dev = 0
        return r

    def stop(self):
        self._stop.set()
        if self._t.is_alive():
            self._t.join(timeout=2)
        return self.all_proc, self.all_dev
