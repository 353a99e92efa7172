/* cmd.h - the mtpd subcommands; each takes argv from its own name on and
 * returns the process exit status (0 ok, 1 runtime error, 2 usage). */
#ifndef MTPD_CMD_H
#define MTPD_CMD_H

int cmd_generate(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_quantize(int argc, char **argv);

#endif
