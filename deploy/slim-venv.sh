#!/bin/sh
# Remove from the runtime virtualenv ($1) what serving never loads. Run by deploy/Dockerfile;
# the container tests (tests/deploy) check the image still answers correctly.
set -eu
sp=$(echo "$1"/lib/python3*/site-packages)
# sympy (+ mpmath): a declared dependency of onnxruntime used only by its offline tools
# (symbolic shape inference), never by an InferenceSession. ~85 MB.
"$1/bin/pip" uninstall -y -q sympy mpmath
capi="$sp/onnxruntime/capi"
if [ -d "$capi" ]; then
  # The ONNX Runtime C library, for C/C++ callers: the Python module has ORT linked in and the
  # providers reach it through libonnxruntime_providers_shared. ~31 MB.
  rm -f "$capi"/libonnxruntime.so.*
  # Offline tooling (quantization, transformer optimizers, converters): build/ uses these,
  # in the build stage; serving imports none. ~9 MB.
  rm -rf "$sp/onnxruntime/transformers" "$sp/onnxruntime/quantization" "$sp/onnxruntime/tools"
  # OpenVINO plugins for devices a CPU container cannot use (Intel GPU needs /dev/dri and
  # OpenCL, NPU its driver). CPU, AUTO and HETERO stay. ~24 MB.
  rm -f "$capi/libopenvino_intel_gpu_plugin.so" "$capi/libopenvino_intel_npu_plugin.so"
  # Wheels cannot hold symlinks: libX.so, libX.so.<version> and libX.so.<soname> are three
  # copies of one file. Keep the soname file the libraries link against, link the others.
  # ~65 MB.
  for keep in "$capi"/lib*.so.*; do
    case ${keep##*.so.} in *.*) continue ;; esac  # the soname file: libX.so.<one number>
    if [ -L "$keep" ]; then continue; fi
    stem=${keep%.so.*}
    for copy in "$stem".so "$stem".so.*; do
      if [ "$copy" != "$keep" ] && [ -f "$copy" ] && [ ! -L "$copy" ] && cmp -s "$copy" "$keep"
      then
        ln -sf "$(basename "$keep")" "$copy"
      fi
    done
  done
fi
# Test suites shipped inside packages (numpy's alone is ~12 MB).
find "$sp" -depth -type d -name tests -path "$sp/numpy/*" -exec rm -rf {} +
# Debug symbols of the extension modules and bundled libraries (many wheels ship them: ml_dtypes
# 24 -> 1.5 MB, onnxruntime's module 33 -> 27 MB). --strip-unneeded keeps the dynamic symbols
# the loader needs. ~30 MB. Not the libraries auditwheel vendored into <pkg>.libs/: patchelf
# rewrote their headers, and strip then makes them unloadable ("ELF load command
# address/offset not page-aligned", seen with numpy's OpenBLAS).
if command -v strip >/dev/null; then
  find "$sp" -type f \( -name '*.so' -o -name '*.so.*' \) -not -path '*.libs/*' \
    -exec strip --strip-unneeded {} +
else
  echo "slim-venv: no strip (binutils): shared libraries left unstripped" >&2
fi
