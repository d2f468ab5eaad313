// The communicator shared by the MPI tests (set up by mpi_main.cpp).
#pragma once
#include "dist/communicator.h"

namespace relora::testing {
extern Communicator* g_comm;
}
