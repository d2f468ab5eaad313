// `relora data ...`: the data pipeline's command line (prepare, inspect) and its help.
#pragma once

namespace relora {

// argv[0] is the subcommand: "prepare", "inspect" or "--help". Returns the exit code; bad
// input throws InputError (exit code 2 in main).
int data_command(int argc, char** argv);

}  // namespace relora
