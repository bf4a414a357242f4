/*
 * cli.h - `vectron cli`: the command-line client of a Vectron (or Qdrant)
 * server, over its Qdrant-compatible REST API.
 *
 *   vectron cli [--url URL] info
 *   vectron cli [--url URL] collections list|create|info|delete ...
 *   vectron cli [--url URL] load NAME FILE [--format fvecs|jsonl] ...
 *   vectron cli [--url URL] search NAME --vector V | --fvecs FILE --row N ...
 *   vectron cli help [COMMAND]
 *
 * The server is http://127.0.0.1:6333 unless --url or $VECTRON_URL says
 * otherwise.  Results go to stdout, errors and progress to stderr.
 *
 * The client is one process run per command: it keeps no state between
 * runs and nothing global inside (the bulk loader's threads share one
 * struct passed to them).  The HTTP client is our own (cli/http_client.h);
 * JSON is read with cJSON and the bulk loader writes its JSON by hand.
 */
#ifndef VX_CLI_CLI_H
#define VX_CLI_CLI_H

/* Run `vectron cli ...`: argv[0] is "cli" (it is not read), argv[1] the
 * command.  Returns the process exit status: 0 success; 1 a request failed
 * (the server's or the network's error is on stderr) or a file could not be
 * read; 2 bad arguments or bad input data, found before anything was sent.
 * `info` returns 1 as well when the server answers but is not ready.
 * Writes to stdout and stderr.  Avoids SIGPIPE per call (MSG_NOSIGNAL),
 * installs no signal handlers and calls no setlocale (the numbers it
 * writes assume the "C" locale a process starts in). */
int vx_cli_main(int argc, char **argv);

#endif
