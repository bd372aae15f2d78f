/* metrics.c: the evaluation metrics of pulse (see metrics.h).
 *
 * Design. Every metric is a pure function that reproduces one published implementation
 * bit for bit where the arithmetic allows it (same operations in the same order, double
 * precision), and otherwise closely (the asymptotic KS branch, kstwo.sf, to ~1e-10
 * relative). The references, read for semantics only:
 *   - nltk/stem/porter.py, PorterStemmer(mode=NLTK_EXTENSIONS) (NLTK 3.8/3.9);
 *   - google-research rouge_score 0.1.2: tokenize.py, rouge_scorer.py, scoring.py;
 *   - nltk/translate/bleu_score.py (NLTK 3.9): sentence_bleu, modified_precision,
 *     brevity_penalty, SmoothingFunction.method1, with math.fsum;
 *   - MLLMU-Bench eval.py (LLaVA branch, read in the fork YokeYao/MLLMU-Bench): answer
 *     extraction, letter and cloze scoring;
 *   - locuslab/open-unlearning (OU) src/evals/metrics: probability, truth ratio, EM, ES,
 *     MIA attacks (LOSS, Min-K%, Min-K%++), mia_auc, privleak;
 *   - scipy.stats ks_2samp (scipy 1.10..current): _attempt_exact_2kssamp,
 *     _compute_prob_outside_square, _compute_outer_prob_inside_method (the pythran
 *     "1 - p" recursion of Viehmann 2021), and kstwo.sf = _ksstats._kolmogn.
 * Python string semantics that the metrics inherit (str.lower, str.split, str.strip,
 * first character) are reproduced on UTF-8 with small tables (see py_lower).
 *
 * Layout: unicode helpers | Porter | ROUGE | BLEU | MLLMU-Bench | probabilities | MIA |
 * Kolmogorov-Smirnov | aggregation.
 */
#include "metrics.h"
#include "common.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Bit-exact agreement needs every a*b+c rounded twice, as Python does: no contraction
 * into FMA. GCC in ISO C mode (-std=c11) already never contracts; clang needs telling. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* ----------------------------------------------------------------------------
 * Python string semantics on UTF-8 */

#define CP_INVALID 0x80000000u  /* an undecodable byte b is returned as CP_INVALID | b */

/* Decodes one code point at s (s[0] != 0); returns the number of bytes used. */
static int utf8_next(const unsigned char *s, unsigned *cp) {
    unsigned c = s[0], v;
    int len;
    if (c < 0x80) { *cp = c; return 1; }
    if ((c & 0xE0) == 0xC0) { len = 2; v = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; v = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; v = c & 0x07; }
    else { *cp = CP_INVALID | c; return 1; }
    for (int i = 1; i < len; i++) {          // stops at the NUL terminator: not a continuation
        if ((s[i] & 0xC0) != 0x80) { *cp = CP_INVALID | c; return 1; }
        v = (v << 6) | (s[i] & 0x3F);
    }
    if ((len == 2 && v < 0x80) || (len == 3 && v < 0x800) || (len == 4 && (v < 0x10000 || v > 0x10FFFF))
        || (v >= 0xD800 && v <= 0xDFFF)) { *cp = CP_INVALID | c; return 1; }
    *cp = v;
    return len;
}

static int utf8_put(unsigned cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp & CP_INVALID) { o[0] = (unsigned char)(cp & 0xFF); return 1; }
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = (unsigned char)(0xC0 | (cp >> 6)); o[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12)); o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18)); o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Python str.isspace() (Unicode White_Space plus the ASCII separators 0x1C..0x1F). */
static int py_isspace_cp(unsigned cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0
        || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029
        || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

int py_space_len(const char *s) {
    unsigned cp;
    if (!*s) return 0;
    int len = utf8_next((const unsigned char *)s, &cp);
    return py_isspace_cp(cp) ? len : 0;
}

/* Lower-case mapping of one code point, as Python's str.lower() for ASCII, Latin-1,
 * Latin Extended-A and -B, Latin Extended Additional, Greek and Coptic, Cyrillic (+
 * Supplement) and the letterlike K, Ohm and Angstrom signs (checked against CPython for
 * every code point of those blocks); other code points map to themselves. Writes one or
 * two code points to out; returns how many. Greek capital sigma is handled by the caller. */
static int lower_cp(unsigned cp, unsigned out[2]) {
    // Latin Extended-B capitals without a regular layout: {upper, lower}
    static const unsigned short latb[][2] = {
        {0x181, 0x253}, {0x182, 0x183}, {0x184, 0x185}, {0x186, 0x254}, {0x187, 0x188}, {0x189, 0x256},
        {0x18A, 0x257}, {0x18B, 0x18C}, {0x18E, 0x1DD}, {0x18F, 0x259}, {0x190, 0x25B}, {0x191, 0x192},
        {0x193, 0x260}, {0x194, 0x263}, {0x196, 0x269}, {0x197, 0x268}, {0x198, 0x199}, {0x19C, 0x26F},
        {0x19D, 0x272}, {0x19F, 0x275}, {0x1A0, 0x1A1}, {0x1A2, 0x1A3}, {0x1A4, 0x1A5}, {0x1A6, 0x280},
        {0x1A7, 0x1A8}, {0x1A9, 0x283}, {0x1AC, 0x1AD}, {0x1AE, 0x288}, {0x1AF, 0x1B0}, {0x1B1, 0x28A},
        {0x1B2, 0x28B}, {0x1B3, 0x1B4}, {0x1B5, 0x1B6}, {0x1B7, 0x292}, {0x1B8, 0x1B9}, {0x1BC, 0x1BD},
        {0x1C4, 0x1C6}, {0x1C5, 0x1C6}, {0x1C7, 0x1C9}, {0x1C8, 0x1C9}, {0x1CA, 0x1CC}, {0x1CB, 0x1CC},
        {0x1F1, 0x1F3}, {0x1F2, 0x1F3}, {0x1F4, 0x1F5}, {0x1F6, 0x195}, {0x1F7, 0x1BF}, {0x220, 0x19E},
        {0x23A, 0x2C65}, {0x23B, 0x23C}, {0x23D, 0x19A}, {0x23E, 0x2C66}, {0x241, 0x242}, {0x243, 0x180},
        {0x244, 0x289}, {0x245, 0x28C},
    };
    unsigned r = cp;
    if (cp & CP_INVALID) r = cp;
    else if (cp >= 'A' && cp <= 'Z') r = cp + 32;
    else if ((cp >= 0xC0 && cp <= 0xDE && cp != 0xD7)) r = cp + 32;
    else if (cp >= 0x100 && cp <= 0x17F) {
        if (cp == 0x130) { out[0] = 'i'; out[1] = 0x307; return 2; }   // I with dot -> i + combining dot
        else if (cp == 0x178) r = 0xFF;
        else if ((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17E)) r = (cp & 1) ? cp + 1 : cp;
        else if (cp == 0x131 || cp == 0x138 || cp == 0x149 || cp == 0x17F) r = cp;
        else r = (cp & 1) ? cp : cp + 1;
    }
    else if (cp >= 0x180 && cp <= 0x24F) {
        if ((cp >= 0x1CD && cp <= 0x1DC)) r = (cp & 1) ? cp + 1 : cp;
        else if ((cp >= 0x1DE && cp <= 0x1EF) || (cp >= 0x1F8 && cp <= 0x21F) || (cp >= 0x222 && cp <= 0x233)
                 || (cp >= 0x246 && cp <= 0x24F)) r = (cp & 1) ? cp : cp + 1;
        else
            for (size_t i = 0; i < sizeof latb / sizeof latb[0]; i++)
                if (latb[i][0] == cp) { r = latb[i][1]; break; }
    }
    else if ((cp >= 0x1E00 && cp <= 0x1E95) || (cp >= 0x1EA0 && cp <= 0x1EFF)) r = (cp & 1) ? cp : cp + 1;
    else if (cp == 0x1E9E) r = 0xDF;                                 // capital sharp s
    else if (cp == 0x386) r = 0x3AC;
    else if (cp >= 0x388 && cp <= 0x38A) r = cp + 37;
    else if (cp == 0x38C) r = 0x3CC;
    else if (cp == 0x38E || cp == 0x38F) r = cp + 63;
    else if (cp >= 0x391 && cp <= 0x3AB && cp != 0x3A2) r = cp + 32;
    else if (cp == 0x370 || cp == 0x372 || cp == 0x376 || (cp >= 0x3D8 && cp <= 0x3EF)) r = (cp & 1) ? cp : cp + 1;
    else if (cp == 0x37F) r = 0x3F3;
    else if (cp == 0x3CF) r = 0x3D7;
    else if (cp == 0x3F4) r = 0x3B8;
    else if (cp == 0x3F7 || cp == 0x3FA) r = cp + 1;
    else if (cp == 0x3F9) r = 0x3F2;
    else if (cp >= 0x3FD && cp <= 0x3FF) r = cp - 130;
    else if (cp >= 0x400 && cp <= 0x40F) r = cp + 80;
    else if (cp >= 0x410 && cp <= 0x42F) r = cp + 32;
    else if ((cp >= 0x460 && cp <= 0x481) || (cp >= 0x48A && cp <= 0x4BF) || (cp >= 0x4D0 && cp <= 0x52F))
        r = (cp & 1) ? cp : cp + 1;
    else if (cp == 0x4C0) r = 0x4CF;
    else if (cp >= 0x4C1 && cp <= 0x4CE) r = (cp & 1) ? cp + 1 : cp;
    else if (cp == 0x2126) r = 0x3C9;                                // OHM SIGN -> omega
    else if (cp == 0x212A) r = 'k';                                  // KELVIN SIGN -> k
    else if (cp == 0x212B) r = 0xE5;                                 // ANGSTROM SIGN -> a ring
    out[0] = r;
    return 1;
}

/* Cased letters of the blocks lower_cp knows (for the final-sigma rule). */
static int is_cased_cp(unsigned cp) {
    if (cp & CP_INVALID) return 0;
    return (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') || cp == 0xAA || cp == 0xB5 || cp == 0xBA
        || (cp >= 0xC0 && cp <= 0x24F && cp != 0xD7 && cp != 0xF7)
        || (cp >= 0x370 && cp <= 0x3FF && cp != 0x375 && cp != 0x37E && cp != 0x384 && cp != 0x385 && cp != 0x387)
        || (cp >= 0x400 && cp <= 0x52F && !(cp >= 0x482 && cp <= 0x489)) || (cp >= 0x1E00 && cp <= 0x1EFF);
}

char *py_lower(const char *text) {
    size_t n = strlen(text);
    char *out = xmalloc(2 * n + 1);           // every mapping at most doubles the bytes
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0, o = 0;
    unsigned prev = 0;
    while (s[i]) {
        unsigned cp, m[2];
        int len = utf8_next(s + i, &cp);
        if (cp == 0x3A3) {
            // Python's Final_Sigma rule, reduced to the immediate neighbours: capital sigma
            // after a cased letter and not before one becomes final sigma.
            unsigned next = 0;
            if (s[i + len]) utf8_next(s + i + len, &next);
            m[0] = (is_cased_cp(prev) && !is_cased_cp(next)) ? 0x3C2 : 0x3C3;
            o += utf8_put(m[0], out + o);
        } else {
            int k = lower_cp(cp, m);
            for (int j = 0; j < k; j++) o += utf8_put(m[j], out + o);
        }
        prev = cp;
        i += len;
    }
    out[o] = 0;
    return out;
}

char *py_strip(const char *text) {
    const char *b = text, *e = text + strlen(text);
    int k;
    while ((k = py_space_len(b)) > 0) b += k;
    // trailing whitespace: scan forward remembering where the last non-space run ended
    const char *p = b, *last = b;
    while (p < e) {
        if ((k = py_space_len(p)) > 0) p += k;
        else { unsigned cp; p += utf8_next((const unsigned char *)p, &cp); last = p; }
    }
    size_t n = (size_t)(last - b);
    char *out = xmalloc(n + 1);
    memcpy(out, b, n);
    out[n] = 0;
    return out;
}

/* Python str.split() with no argument: pointers into a copy (*buf) of text. */
static char **py_split(const char *text, int *count, char **buf) {
    size_t n = strlen(text);
    char *b = xmalloc(n + 1);
    memcpy(b, text, n + 1);
    char **tok = xmalloc((n / 2 + 2) * sizeof(char *));
    int c = 0;
    char *p = b;
    while (*p) {
        int k;
        while ((k = py_space_len(p)) > 0) p += k;
        if (!*p) break;
        tok[c++] = p;
        while (*p && (k = py_space_len(p)) == 0) { unsigned cp; p += utf8_next((unsigned char *)p, &cp); }
        if (*p) { *p = 0; p += k; }          // terminate the token; k bytes of separator
    }
    *count = c;
    *buf = b;
    return tok;
}

/* ----------------------------------------------------------------------------
 * Porter stemmer, NLTK_EXTENSIONS mode (nltk/stem/porter.py). The word lives in a buffer
 * w[0..n); every rule only shortens or keeps its length, so the buffer never grows. */

static int is_vowel_ch(char c) { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u'; }

/* porter.py _is_consonant without recursion: in a run of y's the status alternates,
 * starting from "consonant" when the run begins the word or follows a vowel. */
static int p_cons(const char *w, int i) {
    if (w[i] != 'y') return !is_vowel_ch(w[i]);
    int s = i;
    while (s > 0 && w[s - 1] == 'y') s--;
    int first = (s == 0) ? 1 : is_vowel_ch(w[s - 1]);
    return ((i - s) % 2 == 0) ? first : !first;
}

/* m in [C](VC){m}[V]: the number of vowel->consonant transitions. */
static int p_measure(const char *w, int n) {
    int m = 0;
    for (int i = 1; i < n; i++) if (!p_cons(w, i - 1) && p_cons(w, i)) m++;
    return m;
}

static int p_has_vowel(const char *w, int n) {
    for (int i = 0; i < n; i++) if (!p_cons(w, i)) return 1;
    return 0;
}

static int p_double_cons(const char *w, int n) {
    return n >= 2 && w[n - 1] == w[n - 2] && p_cons(w, n - 1);
}

/* *o: cvc with the last c not w, x, y; NLTK also accepts a 2-letter vc word. */
static int p_cvc(const char *w, int n) {
    if (n >= 3 && p_cons(w, n - 3) && !p_cons(w, n - 2) && p_cons(w, n - 1)
        && w[n - 1] != 'w' && w[n - 1] != 'x' && w[n - 1] != 'y') return 1;
    return n == 2 && !p_cons(w, 0) && p_cons(w, 1);
}

static int p_ends(const char *w, int n, const char *suf) {
    int k = (int)strlen(suf);
    return n >= k && memcmp(w + n - k, suf, (size_t)k) == 0;
}

/* Replaces the last k characters by rep (never longer than what it replaces + slack). */
static void p_set(char *w, int *n, int k, const char *rep) {
    int r = (int)strlen(rep);
    memcpy(w + *n - k, rep, (size_t)r);
    *n = *n - k + r;
    w[*n] = 0;
}

enum { C_NONE, C_M0, C_M1, C_ION, C_LOGI };

typedef struct PRule { const char *suf, *rep; int cond; } PRule;

/* porter.py _apply_rule_list: the FIRST rule whose suffix matches decides; if its
 * condition fails the word is returned unchanged (later rules are not tried). */
static void p_rules(char *w, int *n, const PRule *rules, int nr) {
    for (int i = 0; i < nr; i++) {
        const PRule *r = &rules[i];
        if (!p_ends(w, *n, r->suf)) continue;
        int k = (int)strlen(r->suf), sn = *n - k, ok = 0;
        switch (r->cond) {
        case C_NONE: ok = 1; break;
        case C_M0: ok = p_measure(w, sn) > 0; break;
        case C_M1: ok = p_measure(w, sn) > 1; break;
        case C_ION: ok = p_measure(w, sn) > 1 && sn > 0 && (w[sn - 1] == 's' || w[sn - 1] == 't'); break;
        case C_LOGI: ok = p_measure(w, *n - 3) > 0; break;   // NLTK: measure of word[:-3]
        }
        if (ok) p_set(w, n, k, r->rep);
        return;
    }
}

static void p_step1a(char *w, int *n) {
    if (p_ends(w, *n, "ies") && *n == 4) { p_set(w, n, 3, "ie"); return; }   // NLTK: dies -> die
    static const PRule r[] = { {"sses", "ss", C_NONE}, {"ies", "i", C_NONE}, {"ss", "ss", C_NONE}, {"s", "", C_NONE} };
    p_rules(w, n, r, 4);
}

static void p_step1b(char *w, int *n) {
    if (p_ends(w, *n, "ied")) { p_set(w, n, 3, *n == 4 ? "ie" : "i"); return; }   // NLTK extension
    if (p_ends(w, *n, "eed")) {
        if (p_measure(w, *n - 3) > 0) p_set(w, n, 3, "ee");
        return;
    }
    int sn = -1;
    if (p_ends(w, *n, "ed") && p_has_vowel(w, *n - 2)) sn = *n - 2;
    else if (p_ends(w, *n, "ing") && p_has_vowel(w, *n - 3)) sn = *n - 3;
    if (sn < 0) return;
    *n = sn;                                      // the intermediate stem
    w[sn] = 0;
    if (p_ends(w, sn, "at")) { p_set(w, n, 2, "ate"); return; }
    if (p_ends(w, sn, "bl")) { p_set(w, n, 2, "ble"); return; }
    if (p_ends(w, sn, "iz")) { p_set(w, n, 2, "ize"); return; }
    if (p_double_cons(w, sn)) {                    // "*d": hopp -> hop, but fall/hiss/fizz stay
        char last = w[sn - 1];
        if (last != 'l' && last != 's' && last != 'z') { *n = sn - 1; w[*n] = 0; }
        return;
    }
    if (p_measure(w, sn) == 1 && p_cvc(w, sn)) { w[sn] = 'e'; *n = sn + 1; w[*n] = 0; }   // fil -> file
}

static void p_step1c(char *w, int *n) {
    // NLTK: y -> i only after a consonant that is not the first letter (happy -> happi, sky stays)
    if (p_ends(w, *n, "y") && *n - 1 > 1 && p_cons(w, *n - 2)) w[*n - 1] = 'i';
}

static void p_step2(char *w, int *n) {
    // NLTK: alli -> al and then step 2 again (so "...alli" may go on to "...al" rules)
    while (p_ends(w, *n, "alli") && p_measure(w, *n - 4) > 0) p_set(w, n, 4, "al");
    static const PRule r[] = {
        {"ational", "ate", C_M0}, {"tional", "tion", C_M0}, {"enci", "ence", C_M0}, {"anci", "ance", C_M0},
        {"izer", "ize", C_M0}, {"bli", "ble", C_M0}, {"alli", "al", C_M0}, {"entli", "ent", C_M0},
        {"eli", "e", C_M0}, {"ousli", "ous", C_M0}, {"ization", "ize", C_M0}, {"ation", "ate", C_M0},
        {"ator", "ate", C_M0}, {"alism", "al", C_M0}, {"iveness", "ive", C_M0}, {"fulness", "ful", C_M0},
        {"ousness", "ous", C_M0}, {"aliti", "al", C_M0}, {"iviti", "ive", C_M0}, {"biliti", "ble", C_M0},
        {"fulli", "ful", C_M0}, {"logi", "log", C_LOGI},
    };
    p_rules(w, n, r, (int)(sizeof r / sizeof r[0]));
}

static void p_step3(char *w, int *n) {
    static const PRule r[] = {
        {"icate", "ic", C_M0}, {"ative", "", C_M0}, {"alize", "al", C_M0}, {"iciti", "ic", C_M0},
        {"ical", "ic", C_M0}, {"ful", "", C_M0}, {"ness", "", C_M0},
    };
    p_rules(w, n, r, (int)(sizeof r / sizeof r[0]));
}

static void p_step4(char *w, int *n) {
    static const PRule r[] = {
        {"al", "", C_M1}, {"ance", "", C_M1}, {"ence", "", C_M1}, {"er", "", C_M1}, {"ic", "", C_M1},
        {"able", "", C_M1}, {"ible", "", C_M1}, {"ant", "", C_M1}, {"ement", "", C_M1}, {"ment", "", C_M1},
        {"ent", "", C_M1}, {"ion", "", C_ION}, {"ou", "", C_M1}, {"ism", "", C_M1}, {"ate", "", C_M1},
        {"iti", "", C_M1}, {"ous", "", C_M1}, {"ive", "", C_M1}, {"ize", "", C_M1},
    };
    p_rules(w, n, r, (int)(sizeof r / sizeof r[0]));
}

static void p_step5(char *w, int *n) {
    if (p_ends(w, *n, "e")) {                       // 5a
        int m = p_measure(w, *n - 1);
        if (m > 1 || (m == 1 && !p_cvc(w, *n - 1))) { (*n)--; w[*n] = 0; }
    }
    if (p_ends(w, *n, "ll") && p_measure(w, *n - 1) > 1) { (*n)--; w[*n] = 0; }   // 5b
}

char *porter_stem(const char *word) {
    // NLTK's irregular forms ("pool"); like NLTK, looked up with the word as given.
    static const char *pool[][2] = {
        {"sky", "sky"}, {"skies", "sky"}, {"dying", "die"}, {"lying", "lie"}, {"tying", "tie"},
        {"news", "news"}, {"innings", "inning"}, {"inning", "inning"}, {"outings", "outing"},
        {"outing", "outing"}, {"cannings", "canning"}, {"canning", "canning"}, {"howe", "howe"},
        {"proceed", "proceed"}, {"exceed", "exceed"}, {"succeed", "succeed"},
    };
    for (size_t i = 0; i < sizeof pool / sizeof pool[0]; i++)
        if (strcmp(word, pool[i][0]) == 0) return xstrdup(pool[i][1]);
    int n = (int)strlen(word);
    char *w = xmalloc((size_t)n + 2);
    for (int i = 0; i <= n; i++) w[i] = (word[i] >= 'A' && word[i] <= 'Z') ? (char)(word[i] + 32) : word[i];
    if (n <= 2) return w;
    p_step1a(w, &n);
    p_step1b(w, &n);
    p_step1c(w, &n);
    p_step2(w, &n);
    p_step3(w, &n);
    p_step4(w, &n);
    p_step5(w, &n);
    return w;
}

/* ----------------------------------------------------------------------------
 * Token interning and n-gram ids, shared by ROUGE and BLEU */

typedef struct KeySlot { int64_t key; int slot; } KeySlot;
typedef struct StrSlot { const char *s; int slot; } StrSlot;

static int cmp_keyslot(const void *a, const void *b) {
    int64_t x = ((const KeySlot *)a)->key, y = ((const KeySlot *)b)->key;
    return (x > y) - (x < y);
}

static int cmp_strslot(const void *a, const void *b) {
    return strcmp(((const StrSlot *)a)->s, ((const StrSlot *)b)->s);
}

/* Dense ids for the tokens of two sequences (equal strings, equal ids); returns how many. */
static int intern2(char **a, int na, char **b, int nb, int *ia, int *ib) {
    int n = na + nb, d = 0;
    StrSlot *v = xmalloc((size_t)(n ? n : 1) * sizeof *v);
    for (int i = 0; i < na; i++) v[i] = (StrSlot){a[i], i};
    for (int i = 0; i < nb; i++) v[na + i] = (StrSlot){b[i], na + i};
    qsort(v, (size_t)n, sizeof *v, cmp_strslot);
    for (int i = 0; i < n; i++) {
        if (i > 0 && strcmp(v[i].s, v[i - 1].s) != 0) d++;
        if (v[i].slot < na) ia[v[i].slot] = d; else ib[v[i].slot - na] = d;
    }
    free(v);
    return n ? d + 1 : 0;
}

/* Dense joint ids of the order-n n-grams of two id sequences (vocabulary size V): ga gets
 * na-n+1 ids, gb nb-n+1 (none when shorter than n). Built order by order: the id of an
 * order-k gram is the dense rank of (id of its order-(k-1) prefix, last token). Returns
 * the number of distinct n-grams. */
static int ngram_ids(const int *a, int na, const int *b, int nb, int V, int n, int *ga, int *gb) {
    for (int i = 0; i < na; i++) ga[i] = a[i];
    for (int i = 0; i < nb; i++) gb[i] = b[i];
    int nd = V;
    KeySlot *ks = xmalloc((size_t)(na + nb + 1) * sizeof *ks);
    for (int k = 2; k <= n; k++) {
        int ca = na >= k ? na - k + 1 : 0, cb = nb >= k ? nb - k + 1 : 0, c = 0;
        for (int i = 0; i < ca; i++, c++) ks[c] = (KeySlot){(int64_t)ga[i] * V + a[i + k - 1], i};
        for (int i = 0; i < cb; i++, c++) ks[c] = (KeySlot){(int64_t)gb[i] * V + b[i + k - 1], ca + i};
        qsort(ks, (size_t)c, sizeof *ks, cmp_keyslot);
        int d = -1;
        for (int i = 0; i < c; i++) {
            if (i == 0 || ks[i].key != ks[i - 1].key) d++;
            if (ks[i].slot < ca) ga[ks[i].slot] = d; else gb[ks[i].slot - ca] = d;
        }
        nd = d + 1;
    }
    free(ks);
    return nd;
}

/* Sum over distinct n-grams of min(count in a, count in b) (rouge_score _score_ngrams and
 * NLTK's clipped counts agree: clip each hypothesis count by the reference count). */
static long ngram_overlap(const int *ga, int la, const int *gb, int lb, int nd) {
    int *ca = xcalloc((size_t)(nd ? nd : 1), sizeof(int)), *cb = xcalloc((size_t)(nd ? nd : 1), sizeof(int));
    for (int i = 0; i < la; i++) ca[ga[i]]++;
    for (int i = 0; i < lb; i++) cb[gb[i]]++;
    long s = 0;
    for (int i = 0; i < nd; i++) s += ca[i] < cb[i] ? ca[i] : cb[i];
    free(ca); free(cb);
    return s;
}

/* ----------------------------------------------------------------------------
 * ROUGE (rouge_score 0.1.2) */

RougeTokens rouge_tokenize(const char *text, int use_stemmer) {
    // tokenize.py: text.lower(); re.sub(r"[^a-z0-9]+", " "); re.split(r"\s+"); stem tokens
    // with len > 3; keep ^[a-z0-9]+$. Non-ASCII code points all become separators, so the
    // byte-level substitution on the lower-cased UTF-8 is exact.
    char *low = py_lower(text);
    size_t n = strlen(low);
    for (size_t i = 0; i < n; i++) {
        char c = low[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) low[i] = ' ';
    }
    RougeTokens t = {0};
    t.tok = xmalloc((n / 2 + 1) * sizeof(char *));
    t.buf = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (low[i] == ' ') { i++; continue; }
        size_t j = i;
        while (j < n && low[j] != ' ') j++;
        low[j] = 0;
        char *tok = low + i;
        char *stem = (use_stemmer && j - i > 3) ? porter_stem(tok) : NULL;
        const char *s = stem ? stem : tok;
        size_t k = strlen(s);
        if (k > 0) {                                // the final ^[a-z0-9]+$ filter drops empties
            memcpy(t.buf + o, s, k + 1);
            t.tok[t.n++] = t.buf + o;
            o += k + 1;
        }
        free(stem);
        i = j + 1;
    }
    free(low);
    return t;
}

void rouge_tokens_free(RougeTokens *t) {
    free(t->tok);
    free(t->buf);
    t->tok = NULL; t->buf = NULL; t->n = 0;
}

/* scoring.py fmeasure, same operation order: 2 * p * r / (p + r). */
static RougeScore rouge_make(double p, double r) {
    RougeScore s = {p, r, 0.0};
    if (p + r > 0) s.fmeasure = 2 * p * r / (p + r);
    return s;
}

static RougeScore rouge_n_ids(const int *a, int na, const int *b, int nb, int V, int n) {
    int *ga = xmalloc((size_t)(na + 1) * sizeof(int)), *gb = xmalloc((size_t)(nb + 1) * sizeof(int));
    int nd = ngram_ids(a, na, b, nb, V, n, ga, gb);
    int la = na >= n ? na - n + 1 : 0, lb = nb >= n ? nb - n + 1 : 0;
    long inter = ngram_overlap(ga, la, gb, lb, nd);
    free(ga); free(gb);
    // rouge_scorer.py _score_ngrams: precision over prediction n-grams, recall over target's
    return rouge_make((double)inter / (double)(lb > 1 ? lb : 1), (double)inter / (double)(la > 1 ? la : 1));
}

static RougeScore rouge_l_ids(const int *a, int na, const int *b, int nb) {
    if (na == 0 || nb == 0) return (RougeScore){0, 0, 0};
    int *prev = xcalloc((size_t)nb + 1, sizeof(int)), *cur = xcalloc((size_t)nb + 1, sizeof(int));
    for (int i = 1; i <= na; i++) {
        for (int j = 1; j <= nb; j++)
            cur[j] = (a[i - 1] == b[j - 1]) ? prev[j - 1] + 1 : (prev[j] > cur[j - 1] ? prev[j] : cur[j - 1]);
        int *t = prev; prev = cur; cur = t;
    }
    int lcs = prev[nb];
    free(prev); free(cur);
    return rouge_make((double)lcs / (double)nb, (double)lcs / (double)na);
}

/* Tokenises both texts and interns the tokens; a = target, b = prediction. */
static int rouge_prepare(const char *target, const char *prediction, int use_stemmer,
                         RougeTokens *ta, RougeTokens *tb, int **a, int **b) {
    *ta = rouge_tokenize(target, use_stemmer);
    *tb = rouge_tokenize(prediction, use_stemmer);
    *a = xmalloc((size_t)(ta->n + 1) * sizeof(int));
    *b = xmalloc((size_t)(tb->n + 1) * sizeof(int));
    return intern2(ta->tok, ta->n, tb->tok, tb->n, *a, *b);
}

RougeScore rouge_n(const char *target, const char *prediction, int n, int use_stemmer) {
    CHECK(n >= 1);
    RougeTokens ta, tb;
    int *a, *b;
    int V = rouge_prepare(target, prediction, use_stemmer, &ta, &tb, &a, &b);
    RougeScore s = rouge_n_ids(a, ta.n, b, tb.n, V, n);
    free(a); free(b); rouge_tokens_free(&ta); rouge_tokens_free(&tb);
    return s;
}

RougeScore rouge_l(const char *target, const char *prediction, int use_stemmer) {
    RougeTokens ta, tb;
    int *a, *b;
    rouge_prepare(target, prediction, use_stemmer, &ta, &tb, &a, &b);
    RougeScore s = rouge_l_ids(a, ta.n, b, tb.n);
    free(a); free(b); rouge_tokens_free(&ta); rouge_tokens_free(&tb);
    return s;
}

RougeScores rouge_score(const char *target, const char *prediction, int use_stemmer) {
    RougeTokens ta, tb;
    int *a, *b;
    int V = rouge_prepare(target, prediction, use_stemmer, &ta, &tb, &a, &b);
    RougeScores s;
    s.rouge1 = rouge_n_ids(a, ta.n, b, tb.n, V, 1);
    s.rouge2 = rouge_n_ids(a, ta.n, b, tb.n, V, 2);
    s.rougeL = rouge_l_ids(a, ta.n, b, tb.n);
    free(a); free(b); rouge_tokens_free(&ta); rouge_tokens_free(&tb);
    return s;
}

/* ----------------------------------------------------------------------------
 * BLEU (NLTK 3.9 sentence_bleu + SmoothingFunction().method1) */

/* Python math.fsum: the correctly rounded sum (Shewchuk's exact partials, then the
 * round-half-even fix-up of CPython's mathmodule.c). Finite inputs only. */
static double fsum(const double *x, int n) {
    double p[64];
    int np = 0;
    for (int k = 0; k < n; k++) {
        double v = x[k];
        int i = 0;
        for (int j = 0; j < np; j++) {
            double y = p[j];
            if (fabs(v) < fabs(y)) { double t = v; v = y; y = t; }
            double hi = v + y, lo = y - (hi - v);
            if (lo != 0.0) p[i++] = lo;
            v = hi;
        }
        CHECK(i < 64);
        p[i] = v;
        np = i + 1;
    }
    double hi = 0.0, lo = 0.0;
    if (np > 0) {
        hi = p[--np];
        while (np > 0) {
            double v = hi, y = p[--np];
            hi = v + y;
            double yr = hi - v;
            lo = y - yr;
            if (lo != 0.0) break;
        }
        if (np > 0 && ((lo < 0.0 && p[np - 1] < 0.0) || (lo > 0.0 && p[np - 1] > 0.0))) {
            double y = lo * 2.0, v = hi + y, yr = v - hi;
            if (y == yr) hi = v;
        }
    }
    return hi;
}

double bleu_sentence(const char *reference, const char *hypothesis) {
    int nr, nh;
    char *rbuf, *hbuf;
    char **rt = py_split(reference, &nr, &rbuf), **ht = py_split(hypothesis, &nh, &hbuf);
    int *r = xmalloc((size_t)(nr + 1) * sizeof(int)), *h = xmalloc((size_t)(nh + 1) * sizeof(int));
    int V = intern2(rt, nr, ht, nh, r, h);
    int *gr = xmalloc((size_t)(nr + 1) * sizeof(int)), *gh = xmalloc((size_t)(nh + 1) * sizeof(int));
    long num[4], den[4];
    for (int n = 1; n <= 4; n++) {
        // modified_precision: hypothesis n-gram counts clipped by the reference counts;
        // denominator max(1, #hypothesis n-grams), kept unreduced (Fraction _normalize=False)
        int nd = ngram_ids(r, nr, h, nh, V, n, gr, gh);
        int lr = nr >= n ? nr - n + 1 : 0, lh = nh >= n ? nh - n + 1 : 0;
        num[n - 1] = ngram_overlap(gh, lh, gr, lr, nd);
        den[n - 1] = lh > 1 ? lh : 1;
    }
    free(gr); free(gh); free(r); free(h);
    free(rt); free(ht); free(rbuf); free(hbuf);
    if (num[0] == 0) return 0.0;                    // corpus_bleu: no unigram match -> 0
    // brevity_penalty(closest_ref_len = nr, hyp_len = nh); nh > 0 here
    double bp = nh > nr ? 1.0 : exp(1.0 - (double)nr / (double)nh);
    double terms[4];
    for (int i = 0; i < 4; i++) {
        // method1: (0 + epsilon) / denominator for zero numerators, the Fraction otherwise
        double p = num[i] == 0 ? (0 + 0.1) / (double)den[i] : (double)num[i] / (double)den[i];
        terms[i] = 0.25 * log(p);
    }
    return bp * exp(fsum(terms, 4));
}

/* ----------------------------------------------------------------------------
 * MLLMU-Bench letter and cloze scoring */

/* Copy of p[0..n) stripped like Python. */
static char *strip_span(const char *p, size_t n) {
    char *seg = xmalloc(n + 1);
    memcpy(seg, p, n);
    seg[n] = 0;
    char *out = py_strip(seg);
    free(seg);
    return out;
}

char *mllmu_response(const char *text, int answer_marker) {
    // eval.py: text.split(MARK)[1].strip() if MARK in text else ..., MARK = "ASSISTANT:"
    // then (cloze, generation) "Answer:"; finally text.strip()
    const char *marks[2] = {"ASSISTANT:", "Answer:"};
    for (int m = 0; m < (answer_marker ? 2 : 1); m++) {
        const char *p = strstr(text, marks[m]);
        if (!p) continue;
        p += strlen(marks[m]);
        const char *e = strstr(p, marks[m]);          // split()[1] ends at the next marker
        return strip_span(p, e ? (size_t)(e - p) : strlen(p));
    }
    return py_strip(text);
}

char *mllmu_answer(const char *generated) {
    // prompt + generated with the prompt's single "ASSISTANT:" at its end: split()[1] is the
    // generated text up to its own first marker (the "Answer:" fallback never applies)
    const char *e = strstr(generated, "ASSISTANT:");
    return strip_span(generated, e ? (size_t)(e - generated) : strlen(generated));
}

char mc_letter(const char *answer, const char *options) {
    // eval.py: assistant_response[0].upper() if assistant_response and
    //          assistant_response[0].upper() in options else None
    // The response is stripped first (eval.py strips it), so leading whitespace is skipped.
    const char *p = answer;
    int k;
    while ((k = py_space_len(p)) > 0) p += k;
    if (!*p) return 0;
    unsigned cp;
    utf8_next((const unsigned char *)p, &cp);
    char up;
    if (cp >= 'a' && cp <= 'z') up = (char)(cp - 32);
    else if (cp < 0x80) up = (char)cp;
    else if (cp == 0x131) up = 'I';                   // dotless i upper-cases to ASCII I
    else if (cp == 0x17F) up = 'S';                   // long s upper-cases to ASCII S
    else return 0;
    if (up == 0 || !strchr(options, up)) return 0;
    return up;
}

int mc_correct(const char *answer, const char *options, char correct) {
    char c = mc_letter(answer, options);
    return c != 0 && c == correct;
}

int mc_likelihood(const double *option_ll, int n) {
    CHECK(n > 0);
    int best = 0;
    for (int i = 1; i < n; i++) if (option_ll[i] > option_ll[best]) best = i;
    return best;
}

int cloze_correct(const char *answer, const char *ground_truth) {
    // eval.py: ground_truth.lower() in assistant_response.lower()
    char *a = py_lower(answer), *g = py_lower(ground_truth);
    int hit = strstr(a, g) != NULL;
    free(a); free(g);
    return hit;
}

/* ----------------------------------------------------------------------------
 * Probability metrics (OU memorization.py, utils.py) */

double nll_sum(const double *logp, int T) {
    double s = 0.0;
    for (int t = 0; t < T; t++) s -= logp[t];
    return s;
}

double nll_mean(const double *logp, int T) {
    CHECK(T > 0);
    return nll_sum(logp, T) / T;
}

double prob_normalised(double nll_sum_value, int T) {
    CHECK(T > 0);
    return exp(-(nll_sum_value / T));              // OU: exp(-(losses / num_token_gt))
}

double prob_with_options(double p_correct, const double *p_wrong, int m) {
    double w = 0.0;
    for (int j = 0; j < m; j++) w += p_wrong[j];
    return p_correct / (p_correct + w + 1e-10);
}

double truth_ratio(double nll_para, const double *nll_pert, int m) {
    CHECK(m >= 1);
    // OU truth_ratio: wrong_prob = exp(-mean_j avg_loss_j) (geometric mean of the
    // perturbed probabilities), correct_prob = exp(-avg_loss); R = wrong / (correct + 1e-10)
    double s = 0.0;
    for (int j = 0; j < m; j++) s += nll_pert[j];
    return exp(-(s / m)) / (exp(-nll_para) + 1e-10);
}

double tr_closer_to_1_better(const double *R, int n) {
    CHECK(n > 0);
    double s = 0.0;
    for (int i = 0; i < n; i++) { double inv = 1.0 / (R[i] + 1e-10); s += R[i] < inv ? R[i] : inv; }
    return s / n;
}

double tr_true_better(const double *R, int n) {
    CHECK(n > 0);
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (1.0 - R[i]) > 0.0 ? 1.0 - R[i] : 0.0;
    return s / n;
}

int argmax_row(const float *row, int V) {
    CHECK(V > 0);
    int best = 0;
    for (int v = 1; v < V; v++) if (row[v] > row[best]) best = v;
    return best;
}

double logprob_at(const float *row, int V, int target) {
    CHECK(V > 0 && target >= 0 && target < V);
    double m = row[0];
    for (int v = 1; v < V; v++) if (row[v] > m) m = row[v];
    double s = 0.0;
    for (int v = 0; v < V; v++) s += exp((double)row[v] - m);
    return (double)row[target] - m - log(s);
}

double exact_memorization(const int *pred, const int *target, int T) {
    CHECK(T > 0);
    int hit = 0;
    for (int t = 0; t < T; t++) hit += pred[t] == target[t];
    return (double)hit / T;
}

double extraction_strength(const int *pred, const int *target, int T) {
    if (T == 0) return 0.0;
    // OU: for k in range(T): break at the first k whose suffix matches; without a break
    // the loop variable is left at T-1
    int k = T - 1;
    for (int s = 0; s < T; s++) {
        int ok = 1;
        for (int t = s; t < T && ok; t++) ok = pred[t] == target[t];
        if (ok) { k = s; break; }
    }
    return 1.0 - (double)k / T;
}

/* ----------------------------------------------------------------------------
 * Membership inference (OU src/evals/metrics/mia/) */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Minus the mean of the lowest max(1, int(T*k)) values (OU min_k.py, min_k_plus_plus.py). */
static double lowest_k_score(const double *v, int T, double k) {
    if (T == 0) return 0.0;
    double *s = xmalloc((size_t)T * sizeof(double));
    memcpy(s, v, (size_t)T * sizeof(double));
    qsort(s, (size_t)T, sizeof(double), cmp_double);
    long nk = (long)((double)T * k);                // Python int(len(x) * k): truncation
    if (nk < 1) nk = 1;
    if (nk > T) nk = T;
    double m = 0.0;
    for (long i = 0; i < nk; i++) m += s[i];
    free(s);
    return -(m / (double)nk);
}

double mia_min_k(const double *logp, int T, double k) {
    return lowest_k_score(logp, T, k);
}

void minkpp_moments(const float *row, int V, double *mu, double *sigma) {
    CHECK(V > 0);
    double m = row[0];
    for (int v = 1; v < V; v++) if (row[v] > m) m = row[v];
    double z = 0.0;
    for (int v = 0; v < V; v++) z += exp((double)row[v] - m);
    double lse = m + log(z), e1 = 0.0, e2 = 0.0;
    for (int v = 0; v < V; v++) {
        double lp = (double)row[v] - lse, p = exp(lp);
        if (p == 0.0) continue;                     // p log p -> 0 (also for -inf logits)
        e1 += p * lp;
        e2 += p * lp * lp;
    }
    double var = e2 - e1 * e1;
    if (var < 1e-6) var = 1e-6;                     // OU: torch.clamp(sigma, min=1e-6)
    *mu = e1;
    *sigma = sqrt(var);
}

double mia_min_k_pp(const double *logp, const double *mu, const double *sigma, int T, double k) {
    if (T == 0) return 0.0;
    double *s = xmalloc((size_t)T * sizeof(double));
    for (int t = 0; t < T; t++) s[t] = (logp[t] - mu[t]) / sigma[t];
    double r = lowest_k_score(s, T, k);
    free(s);
    return r;
}

typedef struct ScoreLab { double s; int pos; } ScoreLab;

static int cmp_scorelab(const void *a, const void *b) {
    double x = ((const ScoreLab *)a)->s, y = ((const ScoreLab *)b)->s;
    return (x > y) - (x < y);
}

double roc_auc(const double *neg, int n_neg, const double *pos, int n_pos) {
    CHECK(n_neg > 0 && n_pos > 0);
    int n = n_neg + n_pos;
    ScoreLab *v = xmalloc((size_t)n * sizeof *v);
    for (int i = 0; i < n_neg; i++) { CHECK(!isnan(neg[i])); v[i] = (ScoreLab){neg[i], 0}; }
    for (int i = 0; i < n_pos; i++) { CHECK(!isnan(pos[i])); v[n_neg + i] = (ScoreLab){pos[i], 1}; }
    qsort(v, (size_t)n, sizeof *v, cmp_scorelab);
    // Mann-Whitney: U = (sum of the positives' mid-ranks) - n_pos (n_pos + 1) / 2; ties
    // share the mean rank, which counts a tied (pos, neg) pair as 1/2
    double rank_sum = 0.0;
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && v[j].s == v[i].s) j++;
        double mid = 0.5 * (double)(i + 1 + j);     // mean of ranks i+1 .. j
        for (int q = i; q < j; q++) if (v[q].pos) rank_sum += mid;
        i = j;
    }
    free(v);
    double u = rank_sum - 0.5 * (double)n_pos * (double)(n_pos + 1);
    return u / ((double)n_pos * (double)n_neg);
}

double mia_auc(const double *forget, int n_forget, const double *holdout, int n_holdout) {
    // OU mia_auc: labels forget = 0, holdout = 1, roc_auc_score(labels, scores)
    return roc_auc(forget, n_forget, holdout, n_holdout);
}

double privleak(double auc_unlearn, double auc_retain) {
    // OU privacy.py: rel_diff of (1 - auc) values with 1e-10 in the denominator
    double s = 1.0 - auc_unlearn, r = 1.0 - auc_retain;
    return (s - r) / (r + 1e-10) * 100.0;
}

/* ----------------------------------------------------------------------------
 * Kolmogorov-Smirnov: scipy.stats.ks_2samp, two-sided, method='auto' */

#define KS_MAX_AUTO_N 10000
#define E128 128
static const double EP128 = 0x1p128, EM128 = 0x1p-128;

/* scipy _compute_prob_outside_square(n, h): P(D_{n,n} >= h/n) by the Horner-like loop
 * P = A0 (1 - A1 (1 - A2 (...))), returned as 2P; same operations in the same order. */
static double ks_prob_outside_square(long n, long h) {
    double P = 0.0;
    long k = (long)floor((double)n / (double)h);
    while (k >= 0) {
        double p1 = 1.0;
        for (long j = 0; j < h; j++) p1 = (double)(n - k * h - j) * p1 / (double)(n + k * h + j + 1);
        P = p1 * (1.0 - P);
        k--;
    }
    return 2 * P;
}

/* scipy _stats_pythran._compute_outer_prob_inside_method(m, n, g, h): the fraction of
 * lattice paths (0,0)->(m,n) that leave the band |x/m - y/n| < h/lcm, computed as
 * "1 - inside" directly column by column (Viehmann 2021), over a sliding window. */
static double ks_outer_prob_inside(long m, long n, long g, long h) {
    if (m < n) { long t = m; m = n; n = t; }
    long mg = m / g, ng = n / g;
    long minj = 0, maxj = (long)ceil((double)h / (double)mg);
    if (maxj > n + 1) maxj = n + 1;
    long curlen = maxj - minj;
    long lenA = 2 * maxj + 2 < n + 1 ? 2 * maxj + 2 : n + 1;
    double *A = xmalloc((size_t)lenA * sizeof(double));
    for (long j = 0; j < lenA; j++) A[j] = 1.0;
    for (long j = minj; j < maxj; j++) A[j] = 0.0;
    for (long i = 1; i <= m; i++) {
        long lastminj = minj, lastlen = curlen;
        minj = (long)floor((double)(ng * i - h) / (double)mg) + 1;
        if (minj < 0) minj = 0;
        if (minj > n) minj = n;
        maxj = (long)ceil((double)(ng * i + h) / (double)mg);
        if (maxj > n + 1) maxj = n + 1;
        if (maxj <= minj) { free(A); return 1.0; }
        double val = minj == 0 ? 0.0 : 1.0;
        for (long jj = 0; jj < maxj - minj; jj++) {
            long j = jj + minj, src = jj + minj - lastminj;
            CHECK(src < lenA && jj < lenA);
            val = (A[src] * (double)i + val * (double)j) / (double)(i + j);
            A[jj] = val;
        }
        curlen = maxj - minj;
        if (lastlen > curlen)                       // numpy slice assignment: clipped to lenA
            for (long q = maxj - minj; q < maxj - minj + (lastlen - curlen) && q < lenA; q++) A[q] = 1.0;
    }
    double r = A[maxj - minj - 1];
    free(A);
    return r;
}

static long gcd_long(long a, long b) { while (b) { long t = a % b; a = b; b = t; } return a; }

KsResult ks_2samp(const double *x, int n1, const double *y, int n2) {
    CHECK(n1 > 0 && n2 > 0);
    double *a = xmalloc((size_t)n1 * sizeof(double)), *b = xmalloc((size_t)n2 * sizeof(double));
    for (int i = 0; i < n1; i++) { CHECK(!isnan(x[i])); a[i] = x[i]; }
    for (int i = 0; i < n2; i++) { CHECK(!isnan(y[i])); b[i] = y[i]; }
    qsort(a, (size_t)n1, sizeof(double), cmp_double);
    qsort(b, (size_t)n2, sizeof(double), cmp_double);
    // cdf1 - cdf2 at every pooled value with right-continuous ECDFs (searchsorted 'right');
    // both ECDFs are step functions, so scanning the distinct pooled values in order suffices
    double maxS = -INFINITY, minv = INFINITY;
    int i = 0, j = 0;
    while (i < n1 || j < n2) {
        double v = (j >= n2 || (i < n1 && a[i] <= b[j])) ? a[i] : b[j];
        while (i < n1 && a[i] <= v) i++;
        while (j < n2 && b[j] <= v) j++;
        double diff = (double)i / (double)n1 - (double)j / (double)n2;
        if (diff > maxS) maxS = diff;
        if (diff < minv) minv = diff;
    }
    free(a); free(b);
    double minS = -minv;
    if (minS < 0) minS = 0;                         // np.clip(-cddiffs[argminS], 0, 1)
    if (minS > 1) minS = 1;
    double d = minS > maxS ? minS : maxS;
    KsResult r = {d, NAN, KS_EXACT};
    int exact_ok = 0;
    if ((n1 > n2 ? n1 : n2) <= KS_MAX_AUTO_N) {
        // _attempt_exact_2kssamp: D is rounded to a multiple of 1/lcm(n1, n2) (numpy round,
        // half to even) and that rounded D is what ks_2samp returns
        long g = gcd_long(n1, n2), lcm = (long)(n1 / g) * n2;
        long h = (long)nearbyint(d * (double)lcm);
        d = (double)h * 1.0 / (double)lcm;
        r.statistic = d;
        double prob;
        if (h == 0) prob = 1.0;
        else if (n1 == n2) prob = ks_prob_outside_square(n1, h);
        else prob = ks_outer_prob_inside(n1, n2, g, h);
        if (prob >= 0.0 && prob <= 1.0) { r.pvalue = prob; exact_ok = 1; }
    }
    if (!exact_ok) {
        // asymptotic (or fallback after a failed exact attempt, keeping the rounded D):
        // kstwo.sf(d, round(m n / (m + n)))
        double m = n1 > n2 ? n1 : n2, nn = n1 > n2 ? n2 : n1;
        double en = m * nn / (m + nn);
        r.method = KS_ASYMP;
        r.pvalue = kstwo_sf(d, (int)nearbyint(en));
    }
    if (r.pvalue < 0) r.pvalue = 0;
    if (r.pvalue > 1) r.pvalue = 1;
    return r;
}

/* --- kstwo.sf: scipy/stats/_ksstats.py _kolmogn(n, x, cdf=False) and its helpers --- */

static double clip01(double p) { return p < 0.0 ? 0.0 : (p > 1.0 ? 1.0 : p); }

/* log(n! / n^n) by Stirling's series (_log_nfactorial_div_n_pow_n). */
static double log_nfact_div_npown(double n) {
    static const double c[8] = {-2.955065359477124183e-2, 6.4102564102564102564e-3,
        -1.9175269175269175269e-3, 8.4175084175084175084e-4, -5.952380952380952381e-4,
        7.9365079365079365079e-4, -2.7777777777777777778e-3, 8.3333333333333333333e-2};
    double rn = 1.0 / n, x = rn / n, poly = 0.0;
    for (int i = 0; i < 8; i++) poly = poly * x + c[i];   // np.polyval (Horner)
    return log(n) / 2 - n + log(2 * M_PI) / 2 + rn * poly;
}

/* Durbin matrix algorithm, Marsaglia-Tsang-Wang form: P(D_n <= d) (_kolmogn_DMTW). */
static double kolmogn_dmtw_cdf(int n, double d) {
    if (d >= 1.0) return 1.0;
    double nd = n * d;
    if (nd <= 0.5) return 0.0;
    int k = (int)ceil(nd), m = 2 * k - 1;
    double h = k - nd;
    double *H = xcalloc((size_t)m * m, sizeof(double)), *P = xcalloc((size_t)m * m, sizeof(double));
    double *T = xmalloc((size_t)m * m * sizeof(double)), *v = xmalloc((size_t)m * sizeof(double));
    double *w = xmalloc((size_t)m * sizeof(double));
    double fac = 1.0;
    for (int j = 1; j <= m; j++) {
        v[j - 1] = 1.0 - pow(h, j);
        w[j - 1] = fac;
        fac /= j;
        v[j - 1] *= fac;
    }
    double base = 2 * h - 1.0 > 0 ? 2 * h - 1.0 : 0.0;
    double tt = pow(base, m) - 2 * pow(h, m);
    v[m - 1] = (1.0 + tt) * fac;
    for (int i = 1; i < m; i++)                     // H[i-1:, i] = w[:m-i+1]
        for (int r = i - 1; r < m; r++) H[r * m + i] = w[r - (i - 1)];
    for (int r = 0; r < m; r++) H[r * m] = v[r];
    for (int c = 0; c < m; c++) H[(m - 1) * m + c] = v[m - 1 - c];
    for (int r = 0; r < m; r++) P[r * m + r] = 1.0;
    int expnt = 0, Hexpnt = 0, nn = n;
    while (nn > 0) {
        if (nn % 2) {                               // P = P @ H
            for (int r = 0; r < m; r++)
                for (int c = 0; c < m; c++) {
                    double s = 0.0;
                    for (int q = 0; q < m; q++) s += P[r * m + q] * H[q * m + c];
                    T[r * m + c] = s;
                }
            memcpy(P, T, (size_t)m * m * sizeof(double));
            expnt += Hexpnt;
        }
        for (int r = 0; r < m; r++)                 // H = H @ H
            for (int c = 0; c < m; c++) {
                double s = 0.0;
                for (int q = 0; q < m; q++) s += H[r * m + q] * H[q * m + c];
                T[r * m + c] = s;
            }
        memcpy(H, T, (size_t)m * m * sizeof(double));
        Hexpnt *= 2;
        if (fabs(H[(k - 1) * m + (k - 1)]) > EP128) {
            for (int q = 0; q < m * m; q++) H[q] /= EP128;
            Hexpnt += E128;
        }
        nn /= 2;
    }
    double p = P[(k - 1) * m + (k - 1)];
    for (int i = 1; i <= n; i++) {
        p = i * p / n;
        if (fabs(p) < EM128) { p *= EP128; expnt -= E128; }
    }
    if (expnt != 0) p = ldexp(p, expnt);
    free(H); free(P); free(T); free(v); free(w);
    return clip01(p);
}

static void pomeranz_j1j2(int i, int n, int ll, int ceilf, int roundf, int *j1o, int *j2o) {
    int j1, j2;
    if (i == 0) { j1 = -ll - ceilf - 1; j2 = ll + ceilf - 1; }
    else {
        int ip1div2 = (i + 1) / 2, ip1mod2 = (i + 1) % 2;
        if (ip1mod2 == 0) {                         // i odd
            if (ip1div2 == n + 1) { j1 = n - ll - ceilf - 1; j2 = n + ll + ceilf - 1; }
            else { j1 = ip1div2 - 1 - ll - roundf - 1; j2 = ip1div2 + ll - 1 + ceilf - 1; }
        } else { j1 = ip1div2 - 1 - ll - 1; j2 = ip1div2 + ll + roundf - 1; }
    }
    *j1o = j1 + 2 > 0 ? j1 + 2 : 0;
    *j2o = j2 < n ? j2 : n;
}

/* Pomeranz recursion: P(D_n <= x) (_kolmogn_Pomeranz). */
static double kolmogn_pomeranz_cdf(int n, double x) {
    double t = n * x;
    int ll = (int)floor(t);
    double f = t - ll, g = f < 1.0 - f ? f : 1.0 - f;
    int ceilf = f > 0 ? 1 : 0, roundf = f > 0.5 ? 1 : 0;
    int npwrs = 2 * (ll + 1);
    double *gp = xmalloc((size_t)npwrs * sizeof(double)), *tg = xmalloc((size_t)npwrs * sizeof(double));
    double *og = xmalloc((size_t)npwrs * sizeof(double));
    double *V0 = xcalloc((size_t)npwrs, sizeof(double)), *V1 = xcalloc((size_t)npwrs, sizeof(double));
    double *conv = xmalloc((size_t)2 * npwrs * sizeof(double));
    gp[0] = tg[0] = og[0] = 1.0;
    double gn = g / n, tgn = 2 * g / n, ogn = (1 - 2 * g) / n;
    for (int m = 1; m < npwrs; m++) {
        gp[m] = gp[m - 1] * gn / m;
        tg[m] = tg[m - 1] * tgn / m;
        og[m] = og[m - 1] * ogn / m;
    }
    int expnt = 0, V0s = 0, V1s = 0, j1, j2;
    V1[0] = 1;
    pomeranz_j1j2(0, n, ll, ceilf, roundf, &j1, &j2);
    for (int i = 1; i < 2 * n + 2; i++) {
        int k1 = j1;
        double *tv = V0; V0 = V1; V1 = tv;
        int ts = V0s; V0s = V1s; V1s = ts;
        memset(V1, 0, (size_t)npwrs * sizeof(double));
        pomeranz_j1j2(i, n, ll, ceilf, roundf, &j1, &j2);
        const double *pw = (i == 1 || i == 2 * n + 1) ? gp : ((i % 2) ? tg : og);
        int ln2 = j2 - k1 + 1;
        if (ln2 > 0) {
            // conv = np.convolve(V0[k1-V0s : k1-V0s+ln2], pwrs[:ln2]) (slices clipped)
            int off = k1 - V0s;
            CHECK(off >= 0);
            int la = ln2 < npwrs - off ? ln2 : npwrs - off, lb = ln2 < npwrs ? ln2 : npwrs;
            CHECK(la > 0 && lb > 0);
            int lc = la + lb - 1;
            for (int q = 0; q < lc; q++) {
                double s = 0.0;
                int lo = q - (lb - 1) > 0 ? q - (lb - 1) : 0, hi = q < la - 1 ? q : la - 1;
                for (int r = lo; r <= hi; r++) s += V0[off + r] * pw[q - r];
                conv[q] = s;
            }
            int cs = j1 - k1, cl = j2 - j1 + 1;
            CHECK(cs >= 0 && cs + cl <= lc && cl <= npwrs);
            double mx = 0.0;
            for (int q = 0; q < cl; q++) { V1[q] = conv[cs + q]; if (V1[q] > mx) mx = V1[q]; }
            if (mx > 0 && mx < EM128) {
                for (int q = 0; q < npwrs; q++) V1[q] *= EP128;
                expnt -= E128;
            }
            V1s = V0s + j1 - k1;
        }
    }
    CHECK(n - V1s >= 0 && n - V1s < npwrs);
    double ans = V1[n - V1s];
    for (int m = 1; m <= n; m++) {
        if (fabs(ans) > EP128) { ans *= EM128; expnt += E128; }
        ans *= m;
    }
    if (expnt != 0) ans = ldexp(ans, expnt);
    free(gp); free(tg); free(og); free(V0); free(V1); free(conv);
    return clip01(ans);
}

/* Pelz-Good asymptotic series for P(D_n <= x) (_kolmogn_PelzGood). */
static double kolmogn_pelzgood_cdf(int n, double x) {
    if (x <= 0.0) return 0.0;
    if (x >= 1.0) return 1.0;
    const double PI2 = M_PI * M_PI, PI4 = PI2 * PI2, PI6 = PI4 * PI2, SQRT2PI = sqrt(2 * M_PI);
    double z = sqrt((double)n) * x, z2 = z * z, z3 = z2 * z, z4 = z2 * z2, z6 = z4 * z2;
    double qlog = -PI2 / 8 / z2;
    if (qlog < -708) return 0.0;
    double q = exp(qlog);
    double k1a = -z2, k1b = PI2 / 4;
    double k2a = 6 * z6 + 2 * z4, k2b = (2 * z4 - 5 * z2) * PI2 / 4, k2c = PI4 * (1 - 2 * z2) / 16;
    double k3d = PI6 * (5 - 30 * z2) / 64, k3c = PI4 * (-60 * z2 + 212 * z4) / 16;
    double k3b = PI2 * (135 * z4 - 96 * z6) / 4, k3a = -30 * z6 - 90 * pow(z, 8);
    double K[4] = {0, 0, 0, 0};
    int maxk = (int)ceil(16 * z / M_PI);
    for (int k = maxk; k > 0; k--) {
        double m = 2 * k - 1, m2 = m * m, m4 = m2 * m2, m6 = m4 * m2, qp = pow(q, 8 * k);
        double c[4] = {1.0, k1a + k1b * m2, k2a + k2b * m2 + k2c * m4, k3a + k3b * m2 + k3c * m4 + k3d * m6};
        for (int i = 0; i < 4; i++) K[i] = K[i] * qp + c[i];
    }
    double div[4] = {z, 6 * z4, 72 * pow(z, 7), 6480 * pow(z, 10)};
    for (int i = 0; i < 4; i++) K[i] = K[i] * q * SQRT2PI / div[i];
    double q2 = exp(-PI2 / 2 / z2), k2extra = 0.0, k3extra = 0.0, sqrt3z = sqrt(3.0) * z;
    for (int k = maxk; k > 0; k--) {
        double ks2 = (double)k * k, qp = pow(q2, ks2), kspi = M_PI * k;
        k2extra += ks2 * qp;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ks2 * qp;
    }
    K[2] += k2extra * (PI2 * SQRT2PI / (-36 * z3));
    K[3] += k3extra * (PI2 * SQRT2PI / (216 * z6));
    double sum = 0.0;
    for (int i = 0; i < 4; i++) sum += K[i] / pow((double)n, i / 2.0);
    return sum;
}

double smirnov_sf(int n, double d) {
    // Birnbaum & Tingey: P(D_n^+ >= d) = d sum_{j=0}^{floor(n(1-d))} C(n,j) (d + j/n)^(j-1)
    // (1 - d - j/n)^(n-j); positive terms, summed in log space with a common scale
    CHECK(n > 0);
    if (isnan(d)) return NAN;
    if (d <= 0.0) return 1.0;
    if (d >= 1.0) return 0.0;
    if (n == 1) return 1.0 - d;
    int jmax = (int)floor(n * (1.0 - d));
    double lgn1 = lgamma(n + 1.0), ld = log(d);
    double *lt = xmalloc((size_t)(jmax + 1) * sizeof(double));
    double mx = -INFINITY;
    for (int j = 0; j <= jmax; j++) {
        double e = d + (double)j / n, ome = ((double)(n - j) - n * d) / n;   // 1 - d - j/n
        if (ome <= 0.0) { lt[j] = -INFINITY; continue; }
        lt[j] = lgn1 - lgamma(j + 1.0) - lgamma(n - j + 1.0) + ld + (j - 1) * log(e) + (n - j) * log(ome);
        if (lt[j] > mx) mx = lt[j];
    }
    double s = 0.0;
    for (int j = 0; j <= jmax; j++) if (lt[j] > -INFINITY) s += exp(lt[j] - mx);
    free(lt);
    return clip01(s * exp(mx));
}

double kstwo_sf(double d, int n) {
    CHECK(n >= 1);
    if (isnan(d)) return NAN;
    // rv_continuous.sf over kstwo's support [0.5/n, 1]
    if (d <= 0.5 / n) return 1.0;
    if (d >= 1.0) return 0.0;
    double x = d, t = n * x;
    if (t <= 1.0) {                                 // Ruben-Gambino: 1/2n <= x <= 1/n
        if (t <= 0.5) return 1.0;
        double prob;
        if (n <= 140) {
            prob = 1.0;
            for (int i = 1; i <= n; i++) prob *= i * (1.0 / n) * (2 * t - 1);
        } else prob = exp(log_nfact_div_npown(n) + n * log(2 * t - 1));
        return clip01(1.0 - prob);
    }
    if (t >= n - 1) return clip01(2 * pow(1.0 - x, n));   // Ruben-Gambino
    if (x >= 0.5) return clip01(2 * smirnov_sf(n, x));
    double nxsq = t * x;
    if (n <= 140) {
        if (nxsq <= 0.754693) return clip01(1.0 - kolmogn_dmtw_cdf(n, x));
        if (nxsq <= 4) return clip01(1.0 - kolmogn_pomeranz_cdf(n, x));
        return clip01(2 * smirnov_sf(n, x));
    }
    if (nxsq >= 370.0) return 0.0;
    if (nxsq >= 2.2) return clip01(2 * smirnov_sf(n, x));
    double cdf;
    if (n <= 100000 && n * pow(x, 1.5) <= 1.4) cdf = kolmogn_dmtw_cdf(n, x);
    else cdf = kolmogn_pelzgood_cdf(n, x);
    return clip01(1.0 - cdf);
}

/* ----------------------------------------------------------------------------
 * Aggregation */

void agg_add(MetricAgg *a, double v) { a->sum += v; a->n++; }

double agg_mean(const MetricAgg *a) { return a->n ? a->sum / (double)a->n : NAN; }

double mean_of(const double *v, int n) {
    CHECK(n > 0);
    double s = 0.0;
    for (int i = 0; i < n; i++) s += v[i];
    return s / n;
}

double percent(long correct, long total) {
    return total > 0 ? (double)correct / (double)total * 100 : 0.0;
}

double harmonic_mean(const double *v, int n) {
    CHECK(n > 0);
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        CHECK(v[i] >= 0.0);
        if (v[i] == 0.0) return 0.0;                // scipy: 1/0 = inf in the sum -> 0
        s += 1.0 / v[i];
    }
    return n / s;
}
