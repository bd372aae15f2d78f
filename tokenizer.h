/* tokenizer.h: byte-level BPE, GPT-2 / HF `tokenizers` compatible.
 *
 * Vocabulary layout of a trained tokenizer (ids are part of the contract):
 *   0 <pad>, 1 <s>, 2 </s>, 3 <image>    added tokens (special), recognised in text
 *   4 .. 259                             the 256 bytes: id 4 + byte value, written in
 *                                        tokenizer.json as GPT-2's bytes_to_unicode chars
 *   260 .. V-1                           merges, in the order they were learned (rank)
 * Encoding: split out added tokens, pre-tokenise with GPT-2's regex (by hand), map bytes
 * to byte tokens, apply merges by rank inside each pre-token. Decoding returns the raw
 * bytes, so any byte string (even invalid UTF-8) round-trips.
 * Saved and loaded as HF tokenizer.json, so HF tokenizers gives the same ids.
 */
#ifndef PULSE_TOKENIZER_H
#define PULSE_TOKENIZER_H

#include <stddef.h>

enum { TOK_PAD = 0, TOK_BOS = 1, TOK_EOS = 2, TOK_IMAGE = 3, TOK_N_SPECIAL = 4, TOK_FIRST_MERGE = 260 };

typedef struct Tokenizer Tokenizer;

/* Trains deterministically on n NUL-terminated texts up to vocab_size ids (>= 260);
 * stops earlier only if no pair of tokens is left to merge. */
Tokenizer *tok_train(const char *const *texts, int n, int vocab_size);
/* Encodes text (no special tokens added; "<image>", "<s>", ... in the text become their
 * ids). Returns the number of ids, or -1 if more than max; never more than strlen(text). */
int tok_encode(const Tokenizer *tok, const char *text, int *ids, int max);
/* Same for text[0..len), which may hold NUL bytes. */
int tok_encode_n(const Tokenizer *tok, const char *text, size_t len, int *ids, int max);
/* Decodes to a malloc'ed NUL-terminated string; added tokens are skipped when
 * skip_special, else written as their text. Ids must be < tok_vocab_size. */
char *tok_decode(const Tokenizer *tok, const int *ids, int n, int skip_special);
/* Same, also giving the length in bytes (the bytes may hold NUL). */
char *tok_decode_n(const Tokenizer *tok, const int *ids, int n, int skip_special, size_t *len);
/* The LLaVA-1.5 / MLLMU-Bench prompt: <s> "USER: <image>\n{question} ASSISTANT:" (without
 * "<image>\n" when !has_image), then, if answer != NULL, " {answer}" and </s>.
 * *answer_start (if not NULL) = index of the first answer token (= the count when
 * answer is NULL). Returns the number of ids, or -1 if more than max. */
int tok_encode_chat(const Tokenizer *tok, const char *question, int has_image, const char *answer,
                    int *ids, int max, int *answer_start);
/* Writes HF tokenizer.json (atomically). */
void tok_save(const char *path, const Tokenizer *tok);
/* Reads tokenizer.json strictly; anything pulse cannot reproduce exactly -> die_input. */
Tokenizer *tok_load(const char *path);
int tok_vocab_size(const Tokenizer *tok);
int tok_n_merges(const Tokenizer *tok);
/* Id of a token given as it appears in tokenizer.json ("<image>", "Ġthe"), or -1. */
int tok_id(const Tokenizer *tok, const char *token);
/* The token's text as in tokenizer.json (byte-level chars), or NULL if id is out of range. */
const char *tok_token(const Tokenizer *tok, int id);
void tok_free(Tokenizer *tok);

/* Pre-tokenisation alone (exposed for tests): splits text[0..len) by GPT-2's regex;
 * writes the end offset of each piece to ends[] and returns the number of pieces
 * (at most len). */
int tok_pretokenize(const char *text, size_t len, size_t *ends);

/* pulse tokenize (--tokenizer FILE | --model CKPT_DIR) TEXT... */
int cmd_tokenize(int argc, char **argv);
/* pulse inspect [--tensors] PATH...: what a checkpoint, adapter, safetensors file,
 * tokenizer.json, dataset (.jsonl), JSON file or image is, checked strictly. (Here
 * rather than in io.c so that io links without the tokenizer.) */
int cmd_inspect(int argc, char **argv);

#endif
