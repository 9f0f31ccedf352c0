# Source this on the GPU machine, from the repository root, before configuring:
#
#   source scripts/gpu/device-setup.sh [DEPS]    # DEPS: what fetch-debs.sh filled
#   cmake -S . -B /tmp/build-cuda $DGRID_CUDA_CMAKE_ARGS && cmake --build /tmp/build-cuda -j16
#
# The GPU machine (Ubuntu 24.04, CUDA, g++ 13, cmake 4, pip PyTorch whose
# cmake prefix is a CUDA LibTorch) has no package registry and none of the
# project's other libraries. This unpacks the carried Debian 12 packages into
# /opt/deb (once), points the compiler, linker, loader and pkg-config there,
# and sets DGRID_CUDA_CMAKE_ARGS for configuring against the CUDA LibTorch.
# Sourced, so it returns instead of exiting on an error.

_dgrid_device_setup() {
  local deps=${1:-.gpu-deps}
  local root=/opt/deb
  local lib=$root/usr/lib/x86_64-linux-gnu
  if ! compgen -G "$deps/debs/*.deb" > /dev/null; then
    echo "device-setup: no packages in $deps/debs (run scripts/gpu/fetch-debs.sh first)" >&2
    return 1
  fi
  if [ ! -e "$root/.dgrid-unpacked" ]; then
    mkdir -p "$root" || return 1
    local deb
    for deb in "$deps"/debs/*.deb; do
      dpkg-deb -x "$deb" "$root" || { echo "device-setup: cannot unpack $deb" >&2; return 1; }
    done
    # Debian's libcurl would take the place of the system's and break the
    # system's own curl; CMake is pointed at the system's instead (below).
    rm -f "$lib"/libcurl.so*
    # civetweb's CMake config insists that its server binary exists; nothing runs it.
    [ -e "$root/usr/bin/civetweb" ] || { touch "$root/usr/bin/civetweb" && chmod +x "$root/usr/bin/civetweb"; }
    touch "$root/.dgrid-unpacked"
  fi

  # Debian's cairo.pc, cairo-svg.pc, cpp-httplib.pc and re2.pc say prefix=/usr
  # and require a dozen further -dev packages' .pc files; these name only the
  # library, under /opt/deb (the CMake files ask for all four).
  local pc=$root/dgrid-pkgconfig
  mkdir -p "$pc"
  cat > "$pc/cairo.pc" <<PC
Name: cairo
Description: Cairo from the carried Debian packages
Version: 1.16.0
Libs: -L$lib -lcairo
Cflags: -I$root/usr/include/cairo
PC
  cat > "$pc/cairo-svg.pc" <<PC
Name: cairo-svg
Description: Cairo's SVG surface (in libcairo) from the carried Debian packages
Version: 1.16.0
Requires: cairo
PC
  cat > "$pc/re2.pc" <<PC
Name: re2
Description: RE2 from the carried Debian packages
Version: 9.0.0
Libs: -L$lib -lre2
Cflags: -I$root/usr/include
PC
  cat > "$pc/cpp-httplib.pc" <<PC
Name: cpp-httplib
Description: cpp-httplib from the carried Debian packages
Version: 0.11.4
Libs: -L$lib -lcpp-httplib
Cflags: -I$root/usr/include -DCPPHTTPLIB_OPENSSL_SUPPORT -DCPPHTTPLIB_ZLIB_SUPPORT -DCPPHTTPLIB_BROTLI_SUPPORT
PC

  export LIBRARY_PATH=$lib
  export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export PATH=$root/usr/bin:$PATH
  export PKG_CONFIG_PATH=$pc PKG_CONFIG_LIBDIR=$pc

  local torch_prefix
  torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)') || {
    echo "device-setup: python3 cannot import torch (no CUDA LibTorch to build against)" >&2
    return 1
  }
  # CMAKE_POLICY_VERSION_MINIMUM: cmake 4 refuses the old minimum versions
  # that some of the carried packages' CMake files declare.
  export DGRID_CUDA_CMAKE_ARGS="-DCMAKE_PREFIX_PATH=$torch_prefix;$root/usr -DCMAKE_BUILD_TYPE=Release -DCMAKE_POLICY_VERSION_MINIMUM=3.5 -DProtobuf_PROTOC_EXECUTABLE=$root/usr/bin/protoc -DGRPC_PROTO_DIR=$root/usr/share/grpc-proto -DPKG_CONFIG_EXECUTABLE=$root/usr/bin/pkgconf -DCURL_LIBRARY=/usr/lib/x86_64-linux-gnu/libcurl.so.4 -DCURL_INCLUDE_DIR=$root/usr/include/x86_64-linux-gnu"
  echo "device-setup: packages in $root; configure with: cmake -S . -B BUILD_DIR \$DGRID_CUDA_CMAKE_ARGS"
}
_dgrid_device_setup "$@"
_dgrid_status=$?
unset -f _dgrid_device_setup
return $_dgrid_status 2>/dev/null || exit $_dgrid_status
