# cmake -DINPUT=kernels.cu -DOUTPUT=kernels.cpp -P emulate_cuda_source.cmake
#
# Turns a CUDA source into C++ for the cuda_sim emulator (include/cuda_sim.h) with exactly
# two rewrites; every other byte, kernel bodies included, stays as written, and a #line
# directive keeps compiler messages and the emulator's sync-point sites on INPUT's lines:
#   name<<<grid, block, smem, stream>>>(args)
#       -> ::sim::Launcher(name, "name", grid, block, smem, stream)(args)
#   extern __shared__ [__align__(N)] T name[];
#       -> T* name = ::sim::dynamic_smem<T>();
# A launch or dynamic shared memory declaration in another form (a template-id kernel such
# as k<D><<<...>>>) is left unrewritten and stops the build here.
file(READ "${INPUT}" text)

set(identifier "[A-Za-z_][A-Za-z0-9_]*")
set(space "[ \t\r\n]*")
# the launch configuration: anything up to ">>>" (">" and ">>" inside it are fine)
set(config "(([^>]|>[^>]|>>[^>])*)")
string(REGEX REPLACE "(${identifier})(${space})<<<${config}>>>(${space})\\("
       "::sim::Launcher(\\1,\\2 \"\\1\", \\3)\\5(" text "${text}")

string(REGEX REPLACE
       "extern[ \t]+__shared__[ \t]+(__align__\\([0-9]+\\)[ \t]+)?([A-Za-z_][A-Za-z0-9_: ]*[A-Za-z0-9_])[ \t]+(${identifier})[ \t]*\\[\\][ \t]*;"
       "\\2* \\3 = ::sim::dynamic_smem<\\2>();" text "${text}")

foreach(leftover "<<<" "extern __shared__")
  string(FIND "${text}" "${leftover}" at)
  if(NOT at EQUAL -1)
    string(SUBSTRING "${text}" ${at} 120 context)
    message(FATAL_ERROR "${INPUT}: cannot rewrite for cuda_sim: ...${context}")
  endif()
endforeach()

file(WRITE "${OUTPUT}.tmp" "#line 1 \"${INPUT}\"\n${text}")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
