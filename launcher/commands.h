// commands: the subcommands of the `snaptp` binary. Each takes the arguments after
// its name (argv[0] is the subcommand) and returns the process exit code.
#ifndef SNAPTP_COMMANDS_H
#define SNAPTP_COMMANDS_H

int cmd_generate(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_qa(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);

#endif
