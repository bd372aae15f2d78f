/* tests/test_metrics.c: every metric of metrics.c against values from the reference
 * implementations and against hand computations.
 *
 * Where the expected numbers come from (printed with repr(), i.e. 17 significant digits):
 *   - Porter table, BLEU: NLTK 3.8 on CPython 3.11 (python3-nltk, Debian 12); its Porter
 *     and BLEU code paths equal NLTK 3.9's (3.9 only adds a Fraction shim for Python 3.12).
 *     During development the C stemmer matched NLTK on 476k words (all words of the man
 *     pages, Python sources and /usr/share/doc, suffix combinations, random strings).
 *   - ROUGE: a line-by-line Python transcription of rouge_score 0.1.2 (tokenize.py,
 *     rouge_scorer.py, scoring.py; the package itself is not installable here) using the
 *     real NLTK PorterStemmer; the first two cases are also worked by hand below.
 *   - KS p-values, kstwo.sf, smirnov, Mann-Whitney AUC: scipy 1.10.1 (python3-scipy).
 *   - everything else: by hand, in the comments.
 * Bit-exact equality is asserted where the C code performs the reference's operations in
 * the reference's order; a relative tolerance otherwise (named at each use).
 */
#include "common.h"
#include "metrics.h"
#include "tests/test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int close_rel(double got, double want, double rtol) {
    if (got == want) return 1;
    return fabs(got - want) <= rtol * fabs(want);
}

static int close_abs(double got, double want, double atol) { return fabs(got - want) <= atol; }

/* ----------------------------------------------------------------------------
 * Porter stemmer */

static void test_porter(void) {
    /* (word, nltk PorterStemmer().stem(word)): irregular forms, every rule of steps 1a-5b,
     * the NLTK extensions (ies/ied of length 4, y after a consonant, alli recursion, fulli,
     * logi, 2-letter *o), words of length <= 2, y runs, digits. */
    static const char *table[][2] = {
        {"dying", "die"}, {"lying", "lie"}, {"tying", "tie"}, {"skies", "sky"},
        {"sky", "sky"}, {"news", "news"}, {"innings", "inning"}, {"inning", "inning"},
        {"outings", "outing"}, {"outing", "outing"}, {"cannings", "canning"}, {"canning", "canning"},
        {"howe", "howe"}, {"proceed", "proceed"}, {"exceed", "exceed"}, {"succeed", "succeed"},
        {"caresses", "caress"}, {"ponies", "poni"}, {"ties", "tie"}, {"dies", "die"},
        {"cats", "cat"}, {"caress", "caress"}, {"gas", "ga"}, {"this", "thi"},
        {"is", "is"}, {"as", "as"}, {"flies", "fli"}, {"cries", "cri"},
        {"feed", "feed"}, {"agreed", "agre"}, {"bleed", "bleed"}, {"speed", "speed"},
        {"plastered", "plaster"}, {"bled", "bled"}, {"motoring", "motor"}, {"sing", "sing"},
        {"conflated", "conflat"}, {"troubled", "troubl"}, {"sized", "size"}, {"hopping", "hop"},
        {"tanned", "tan"}, {"falling", "fall"}, {"hissing", "hiss"}, {"fizzed", "fizz"},
        {"failing", "fail"}, {"filing", "file"}, {"tied", "tie"}, {"cried", "cri"},
        {"spied", "spi"}, {"died", "die"}, {"lied", "lie"}, {"pied", "pie"},
        {"agreeing", "agre"}, {"happy", "happi"}, {"enjoy", "enjoy"}, {"spy", "spi"},
        {"fly", "fli"}, {"try", "tri"}, {"by", "by"}, {"say", "say"},
        {"boy", "boy"}, {"relational", "relat"}, {"conditional", "condit"}, {"rational", "ration"},
        {"valenci", "valenc"}, {"hesitanci", "hesit"}, {"digitizer", "digit"}, {"conformabli", "conform"},
        {"radicalli", "radic"}, {"differentli", "differ"}, {"vileli", "vile"}, {"analogousli", "analog"},
        {"vietnamization", "vietnam"}, {"predication", "predic"}, {"operator", "oper"}, {"feudalism", "feudal"},
        {"decisiveness", "decis"}, {"hopefulness", "hope"}, {"callousness", "callous"}, {"formaliti", "formal"},
        {"sensitiviti", "sensit"}, {"sensibiliti", "sensibl"}, {"generously", "gener"}, {"fully", "fulli"},
        {"hopefulli", "hope"}, {"archaeologi", "archaeolog"}, {"geologi", "geolog"}, {"analogi", "analog"},
        {"biologi", "biolog"}, {"triplicate", "triplic"}, {"formative", "form"}, {"formalize", "formal"},
        {"electriciti", "electr"}, {"electrical", "electr"}, {"hopeful", "hope"}, {"goodness", "good"},
        {"revival", "reviv"}, {"allowance", "allow"}, {"inference", "infer"}, {"airliner", "airlin"},
        {"gyroscopic", "gyroscop"}, {"adjustable", "adjust"}, {"defensible", "defens"}, {"irritant", "irrit"},
        {"replacement", "replac"}, {"adjustment", "adjust"}, {"dependent", "depend"}, {"adoption", "adopt"},
        {"homologou", "homolog"}, {"communism", "commun"}, {"activate", "activ"}, {"angulariti", "angular"},
        {"homologous", "homolog"}, {"effective", "effect"}, {"bowdlerize", "bowdler"}, {"probate", "probat"},
        {"rate", "rate"}, {"cease", "ceas"}, {"controll", "control"}, {"roll", "roll"},
        {"generalizations", "gener"}, {"oscillators", "oscil"}, {"communications", "commun"}, {"organization", "organ"},
        {"running", "run"}, {"ran", "ran"}, {"runs", "run"}, {"runner", "runner"},
        {"easily", "easili"}, {"really", "realli"}, {"finally", "final"}, {"national", "nation"},
        {"a", "a"}, {"an", "an"}, {"at", "at"}, {"on", "on"},
        {"it", "it"}, {"be", "be"}, {"we", "we"}, {"us", "us"},
        {"ox", "ox"}, {"aaa", "aaa"}, {"yyy", "yyy"}, {"yyyy", "yyyi"},
        {"syzygy", "syzygi"}, {"toy", "toy"}, {"ivy", "ivi"}, {"trees", "tree"},
        {"trouble", "troubl"}, {"oats", "oat"}, {"orrery", "orreri"}, {"oaten", "oaten"},
        {"abc123", "abc123"}, {"running123", "running123"}, {"2024s", "2024"},
    };
    int n = (int)(sizeof table / sizeof table[0]), bad = 0;
    for (int i = 0; i < n; i++) {
        char *s = porter_stem(table[i][0]);
        if (strcmp(s, table[i][1]) != 0) { bad++; printf("  porter(%s) = %s, want %s\n", table[i][0], s, table[i][1]); }
        free(s);
    }
    TEST(n >= 150, "porter table has %d pairs", n);
    TEST(bad == 0, "porter: %d of %d stems differ from NLTK", bad, n);
    // NLTK looks the irregular forms up before lower-casing (issue nltk#3567)
    char *s = porter_stem("News");
    TEST(strcmp(s, "new") == 0, "porter(News) = %s, want new (NLTK checks the pool case-sensitively)", s);
    free(s);
}

/* ----------------------------------------------------------------------------
 * Python string helpers */

static void test_python_strings(void) {
    char *s = py_strip(" \t\n\x1c\xc2\xa0hi there\xe3\x80\x80 \x1f\r");   // NBSP, ideographic space
    TEST(strcmp(s, "hi there") == 0, "py_strip: got [%s]", s);
    free(s);
    s = py_strip("   ");
    TEST(strcmp(s, "") == 0, "py_strip of spaces: got [%s]", s);
    free(s);
    s = py_strip("\xc3\xa9 ");                                  // e acute is not whitespace
    TEST(strcmp(s, "\xc3\xa9") == 0, "py_strip keeps non-space UTF-8");
    free(s);
    TEST(py_space_len("\xe2\x80\xa8x") == 3 && py_space_len("x ") == 0 && py_space_len("") == 0,
         "py_space_len: U+2028 is whitespace, x is not");
    s = py_lower("ABC \xc3\x89" "cole \xc4\xb0 \xe2\x84\xaa \xce\x9f\xce\x94\xce\x9f\xce\xa3 \xd0\x96");
    // E acute -> e acute; I with dot -> i + U+0307; Kelvin -> k; OΔOΣ -> οδος (final sigma); Ж -> ж
    TEST(strcmp(s, "abc \xc3\xa9" "cole i\xcc\x87 k \xce\xbf\xce\xb4\xce\xbf\xcf\x82 \xd0\xb6") == 0, "py_lower: got [%s]", s);
    free(s);
    s = py_lower("\xff\xfe" "A");                               // invalid UTF-8 bytes pass through
    TEST(strcmp(s, "\xff\xfe" "a") == 0, "py_lower keeps invalid bytes");
    free(s);
}

/* ----------------------------------------------------------------------------
 * ROUGE */

static int rouge_eq(RougeScore s, double p, double r, double f) {
    return s.precision == p && s.recall == r && s.fmeasure == f;
}

static void test_rouge(void) {
    /* By hand. target "The cats are running", prediction "a cat runs".
     * Without stemming: [the cats are running] vs [a cat runs]: no common token -> 0.
     * With stemming (only tokens longer than 3 are stemmed): [the cat are run] vs
     * [a cat run]: unigram overlap {cat, run} = 2: P = 2/3, R = 2/4, F = 2PR/(P+R) = 4/7;
     * bigrams {the cat, cat are, are run} vs {a cat, cat run}: none; LCS = [cat run]. */
    const char *t = "The cats are running", *p = "a cat runs";
    RougeScores s0 = rouge_score(t, p, 0), s1 = rouge_score(t, p, 1);
    TEST(rouge_eq(s0.rouge1, 0, 0, 0) && rouge_eq(s0.rouge2, 0, 0, 0) && rouge_eq(s0.rougeL, 0, 0, 0),
         "rouge no stem: got R1 F %g", s0.rouge1.fmeasure);
    TEST(rouge_eq(s1.rouge1, 0.6666666666666666, 0.5, 0.5714285714285715), "rouge1 stem: P %.17g R %.17g F %.17g",
         s1.rouge1.precision, s1.rouge1.recall, s1.rouge1.fmeasure);
    TEST(close_abs(s1.rouge1.fmeasure, 4.0 / 7.0, 1e-15), "rouge1 stem F = 4/7");
    TEST(rouge_eq(s1.rouge2, 0, 0, 0), "rouge2 stem = 0");
    TEST(rouge_eq(s1.rougeL, 0.6666666666666666, 0.5, 0.5714285714285715), "rougeL stem");

    /* By hand. "the quick brown fox jumps over the lazy dog" (9 tokens, 8 bigrams) vs
     * "the quick brown dog jumps on the log" (8 tokens, 7 bigrams).
     * ROUGE-1: the x2, quick, brown, dog, jumps = 6: P = 6/8, R = 6/9, F = 12/17.
     * ROUGE-2: {the quick, quick brown} = 2: P = 2/7, R = 2/8, F = 4/15.
     * ROUGE-L: LCS "the quick brown jumps the" = 5: P = 5/8, R = 5/9, F = 10/17. */
    t = "the quick brown fox jumps over the lazy dog";
    p = "the quick brown dog jumps on the log";
    for (int st = 0; st <= 1; st++) {
        RougeScores s = rouge_score(t, p, st);
        TEST(rouge_eq(s.rouge1, 0.75, 0.6666666666666666, 0.7058823529411765), "fox rouge1 (stem %d)", st);
        TEST(rouge_eq(s.rouge2, 0.2857142857142857, 0.25, 0.26666666666666666), "fox rouge2 (stem %d)", st);
        TEST(rouge_eq(s.rougeL, 0.625, 0.5555555555555556, 0.5882352941176471), "fox rougeL (stem %d)", st);
        TEST(close_abs(s.rouge1.fmeasure, 12.0 / 17, 1e-15) && close_abs(s.rouge2.fmeasure, 4.0 / 15, 1e-15)
             && close_abs(s.rougeL.fmeasure, 10.0 / 17, 1e-15), "fox F values by hand (stem %d)", st);
        RougeScore l = rouge_l(t, p, st), r2 = rouge_n(t, p, 2, st);
        TEST(rouge_eq(l, s.rougeL.precision, s.rougeL.recall, s.rougeL.fmeasure)
             && rouge_eq(r2, s.rouge2.precision, s.rouge2.recall, s.rouge2.fmeasure), "rouge_l/rouge_n agree with rouge_score");
    }

    /* rouge_score transcription values (stemmer on). */
    struct { const char *t, *p; double v[9]; } c[] = {
        {"He was born in Paris, France.", "He was born in Paris.",
         {1.0, 0.8333333333333334, 0.9090909090909091, 1.0, 0.8, 0.888888888888889, 1.0, 0.8333333333333334, 0.9090909090909091}},
        {"The generously relational hoppings happily", "generous relations hopping happy",
         {0.75, 0.6, 0.6666666666666665, 0.6666666666666666, 0.5, 0.5714285714285715, 0.75, 0.6, 0.6666666666666665}},
        {"\xc4\xb0stanbul Kelvin", "istanbul kelvin",        // "İstanbul" lower-cases to "i" + U+0307 + "stanbul"
         {0.5, 0.3333333333333333, 0.4, 0.0, 0.0, 0.0, 0.5, 0.3333333333333333, 0.4}},
        {"Jos\xc3\xa9 N\xc3\xba\xc3\xb1" "ez won 3 awards in 2019.", "jose nunez won three awards in 2019",
         {0.5714285714285714, 0.5, 0.5333333333333333, 0.3333333333333333, 0.2857142857142857, 0.30769230769230765,
          0.5714285714285714, 0.5, 0.5333333333333333}},
        {"a a a b", "a a c",                                    // clipped counts: min(3, 2) for "a"
         {0.6666666666666666, 0.5, 0.5714285714285715, 0.5, 0.3333333333333333, 0.4, 0.6666666666666666, 0.5, 0.5714285714285715}},
        {"Hello!!!", "hello", {1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0}},
        {"don't stop", "don t stop", {1, 1, 1, 1, 1, 1, 1, 1, 1}},
        {"", "", {0, 0, 0, 0, 0, 0, 0, 0, 0}},
        {"abc", "", {0, 0, 0, 0, 0, 0, 0, 0, 0}},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        RougeScores s = rouge_score(c[i].t, c[i].p, 1);
        const double *v = c[i].v;
        TEST(rouge_eq(s.rouge1, v[0], v[1], v[2]) && rouge_eq(s.rouge2, v[3], v[4], v[5]) && rouge_eq(s.rougeL, v[6], v[7], v[8]),
             "rouge case %zu [%s | %s]: R1 %.17g %.17g %.17g R2 %.17g %.17g %.17g RL %.17g %.17g %.17g", i, c[i].t, c[i].p,
             s.rouge1.precision, s.rouge1.recall, s.rouge1.fmeasure, s.rouge2.precision, s.rouge2.recall,
             s.rouge2.fmeasure, s.rougeL.precision, s.rougeL.recall, s.rougeL.fmeasure);
    }
    RougeScore r3 = rouge_n("a b c d", "a b c x", 3, 0);          // trigrams {abc, bcd} vs {abc, bcx}
    TEST(rouge_eq(r3, 0.5, 0.5, 0.5), "rouge3 = 1/2");

    RougeTokens tk = rouge_tokenize("The generously relational hoppings happily, e-mail 3.5", 1);
    const char *want[] = {"the", "gener", "relat", "hop", "happili", "e", "mail", "3", "5"};
    int ok = tk.n == 9;
    for (int i = 0; ok && i < 9; i++) ok = strcmp(tk.tok[i], want[i]) == 0;
    TEST(ok, "rouge_tokenize: %d tokens", tk.n);
    rouge_tokens_free(&tk);
}

/* ----------------------------------------------------------------------------
 * BLEU */

static void test_bleu(void) {
    /* By hand. ref "the cat sat on the mat", hyp "the cat sat on a mat" (both 6 tokens):
     * p1 = 5/6, p2 = 3/5 (the cat, cat sat, sat on), p3 = 2/4, p4 = 1/3, BP = 1;
     * BLEU = (5/6 * 3/5 * 2/4 * 1/3)^(1/4) = (1/12)^(1/4) = 0.5372849659... */
    double b = bleu_sentence("the cat sat on the mat", "the cat sat on a mat");
    TEST(b == 0.537284965911771, "bleu 1/12^(1/4): %.17g", b);
    TEST(close_abs(b, pow(1.0 / 12, 0.25), 1e-15), "bleu by hand");
    /* Hypothesis shorter than 4 tokens: "the cat sat" vs 6-token ref: p1 = p2 = p3 = 1, p4 =
     * Fraction(0, 1) -> method1 0.1/1; BP = exp(1 - 6/3) = e^-1: BLEU = e^-1 * 0.1^(1/4). */
    b = bleu_sentence("the cat sat on the mat", "the cat sat");
    TEST(b == 0.20687381245863395 && close_abs(b, exp(-1) * pow(0.1, 0.25), 1e-15), "bleu short hyp: %.17g", b);
    /* Zero counts over real denominators: ref "a b c d e f", hyp "a x b y c": p1 = 3/5,
     * p2 = 0/4 -> 0.1/4, p3 = 0/3 -> 0.1/3, p4 = 0/2 -> 0.1/2; BP = exp(1 - 6/5).
     * NLTK's value differs from the naive product formula in the last bit (math.fsum). */
    b = bleu_sentence("a b c d e f", "a x b y c");
    TEST(b == 0.05789300674674099, "bleu method1 denominators: %.17g", b);
    TEST(close_rel(b, exp(-0.2) * pow(0.6 * 0.025 * (0.1 / 3) * 0.05, 0.25), 1e-15), "bleu method1 by hand");
    /* One matching token: p1 = 1, p2..p4 = 0.1/1; BP = exp(1 - 2) -> e^-1 * 0.1^(3/4). */
    b = bleu_sentence("the cat", "cat");
    TEST(b == 0.06541924356118012, "bleu single token: %.17g", b);
    TEST(bleu_sentence("the cat", "") == 0.0, "bleu empty hypothesis = 0");
    TEST(bleu_sentence("", "the cat") == 0.0, "bleu empty reference = 0");
    TEST(bleu_sentence("a b", "c d") == 0.0, "bleu no unigram match = 0");
    struct { const char *r, *h; double v; } c[] = {
        {"It is a guide to action that ensures that the military will forever heed Party commands",
         "It is to insure the troops forever hearing the activity guidebook that party direct", 0.03446151880350207},
        {"The capital of France is Paris .", "Paris is the capital of France .", 0.1944130841813964},
        {"he  was\tborn in\n1990", "he was born in 1990 in Lyon", 0.6147881529512643},   // str.split() whitespace
        {"Jean-Luc Picard was born in La Barre, France.", "Jean-Luc Picard was born in La Barre, France.", 1.0},
        {"x", "x", 0.1778279410038923}, {"x y", "x y", 0.316227766016838}, {"x y z", "x y z", 0.5623413251903491},
        {"to be or not to be", "to to to to", 0.05795053470733952},                   // clipping: 2 of 4
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        b = bleu_sentence(c[i].r, c[i].h);
        TEST(b == c[i].v, "bleu case %zu: %.17g want %.17g", i, b, c[i].v);
    }
}

/* ----------------------------------------------------------------------------
 * MLLMU-Bench letter and cloze scoring */

static void test_mllmu(void) {
    // eval.py strips the response, so leading whitespace is skipped before the first character
    TEST(mc_letter(" a", "ABCD") == 'A', "' a' -> A");
    TEST(mc_letter("(B)", "ABCD") == 0, "'(B)' -> none");
    TEST(mc_letter("", "ABCD") == 0, "'' -> none");
    TEST(mc_letter("E", "ABCD") == 0, "'E' -> none");
    TEST(mc_letter("b) foo", "ABCD") == 'B', "'b) foo' -> B");
    TEST(mc_letter("\n\tC. because", "ABCD") == 'C', "newline/tab then C");
    TEST(mc_letter("\xc2\xa0" "d", "ABCD") == 'D', "NBSP is stripped like Python");
    TEST(mc_letter("\xc3\xa9", "ABCD") == 0, "non-ASCII first character -> none");
    TEST(mc_letter("   ", "ABCD") == 0, "only spaces -> none");
    TEST(mc_letter("E", "ABCDE") == 'E', "custom option set");
    TEST(mc_correct("b", "ABCD", 'B') == 1 && mc_correct("b", "ABCD", 'C') == 0 && mc_correct("", "ABCD", 'A') == 0,
         "mc_correct");
    char *r = mllmu_response("USER: <image>\nWho?\nA: x\nB: y\nASSISTANT: B. y is right", 0);
    TEST(strcmp(r, "B. y is right") == 0, "mllmu_response after ASSISTANT: [%s]", r);
    free(r);
    r = mllmu_response("ASSISTANT: A \nUSER: more\nASSISTANT: B", 0);    // split()[1]: up to the next marker
    TEST(strcmp(r, "A \nUSER: more") == 0, "mllmu_response takes split()[1]: [%s]", r);
    free(r);
    r = mllmu_response("  no marker  ", 0);
    TEST(strcmp(r, "no marker") == 0, "mllmu_response without marker strips");
    free(r);
    r = mllmu_response("Correct Answer: Paris\n", 1);
    TEST(strcmp(r, "Paris") == 0, "cloze/generation fall back to the Answer: marker: [%s]", r);
    free(r);
    r = mllmu_response("Answer: x ASSISTANT: Lyon", 1);
    TEST(strcmp(r, "Lyon") == 0, "cloze prefers ASSISTANT:");
    free(r);
    r = mllmu_response("Answer: Paris", 0);
    TEST(strcmp(r, "Answer: Paris") == 0, "letter task has no Answer: fallback");
    free(r);
    // continuation-only extraction == eval.py's on prompt + continuation (LLaVA templates)
    const char *prompt = "USER: <image>\nQ?\nA: x\nB: y\nJust give ONE letter representing the answer directly.\nASSISTANT:";
    const char *gens[] = {" B", " C. because\nUSER: next\nASSISTANT: D", "", "ASSISTANT: A", "  Answer: Paris "};
    for (size_t i = 0; i < sizeof gens / sizeof gens[0]; i++) {
        char *full = xasprintf("%s%s", prompt, gens[i]);
        char *a = mllmu_answer(gens[i]), *b = mllmu_response(full, 0), *c = mllmu_response(full, 1);
        TEST(strcmp(a, b) == 0 && strcmp(a, c) == 0, "mllmu_answer([%s]) = [%s], eval.py gives [%s] / [%s]", gens[i], a, b, c);
        free(full); free(a); free(b); free(c);
    }
    double ll[4] = {-1.2, -0.5, -0.5, -3.0};
    TEST(mc_likelihood(ll, 4) == 1, "mc_likelihood argmax, first on ties");
    TEST(cloze_correct("The answer is PARIS.", "paris") == 1, "cloze case-insensitive substring");
    TEST(cloze_correct("Lyon", "Paris") == 0, "cloze miss");
    TEST(cloze_correct("JOS\xc3\x89", "jos\xc3\xa9") == 1, "cloze lower-cases non-ASCII like Python");
    TEST(cloze_correct("anything", "") == 1 && cloze_correct("", "") == 1, "empty ground truth is in every string");
    TEST(percent(3, 4) == 75.0 && percent(0, 0) == 0.0, "percent");
}

/* ----------------------------------------------------------------------------
 * Probability metrics */

static void test_probability(void) {
    double lp[4] = {-0.5, -1.0, -0.25, -0.25};                   // sum -2: NLL 2, mean 0.5
    TEST(nll_sum(lp, 4) == 2.0 && nll_mean(lp, 4) == 0.5, "nll sum/mean");
    TEST(prob_normalised(2.0, 4) == exp(-0.5), "length-normalised probability exp(-2/4)");
    double pw[2] = {0.1, 0.3};
    TEST(prob_with_options(0.6, pw, 2) == 0.6 / (0.6 + 0.4 + 1e-10), "normalised probability over options");
    /* Truth ratio: para NLL 0.5, perturbed NLLs {1, 2}: R = exp(-1.5) / (exp(-0.5) + 1e-10) ~ e^-1. */
    double pert[2] = {1.0, 2.0};
    double R = truth_ratio(0.5, pert, 2);
    TEST(R == exp(-1.5) / (exp(-0.5) + 1e-10) && close_rel(R, exp(-1.0), 1e-9), "truth ratio %.17g", R);
    double Rs[3] = {0.5, 2.0, 1.0};
    /* closer_to_1_better: mean(min(R, 1/(R + 1e-10))) = (0.5 + 0.5 + 1/(1 + 1e-10)) / 3;
     * true_better: mean(max(0, 1 - R)) = (0.5 + 0 + 0) / 3. */
    TEST(close_abs(tr_closer_to_1_better(Rs, 3), 2.0 / 3.0, 1e-10), "closer_to_1_better %.17g", tr_closer_to_1_better(Rs, 3));
    TEST(close_abs(tr_true_better(Rs, 3), 1.0 / 6.0, 1e-16), "true_better");
    int pred[4] = {1, 2, 3, 4}, tgt[4] = {1, 0, 3, 4}, miss[2] = {7, 8};
    TEST(exact_memorization(pred, tgt, 4) == 0.75, "EM 3/4");
    TEST(extraction_strength(pred, tgt, 4) == 0.5, "ES: suffix from k = 2 -> 1 - 2/4");
    TEST(extraction_strength(pred, pred, 4) == 1.0, "ES full match = 1");
    TEST(extraction_strength(pred, miss, 2) == 0.5, "ES total mismatch = 1/T (OU loop quirk)");
    TEST(extraction_strength(pred, tgt, 0) == 0.0, "ES of T = 0 is 0");
    float row[5] = {0.5f, 2.0f, 2.0f, -1.0f, 1.0f};
    TEST(argmax_row(row, 5) == 1, "argmax first on ties");
    double z = exp(0.5) + exp(2.0) * 2 + exp(-1.0) + exp(1.0);
    TEST(close_abs(logprob_at(row, 5, 3), -1.0 - log(z), 1e-14), "logprob_at");
}

/* ----------------------------------------------------------------------------
 * Membership inference */

static void test_mia(void) {
    /* Min-K% (k = 0.4): T = 5 -> int(5*0.4) = 2 lowest of {-0.1,-2,-0.5,-3,-1} are -3, -2:
     * score = -mean = 2.5. T = 2 -> int(0.8) = 0 -> max(1, 0) = 1: the single lowest. */
    double lp[5] = {-0.1, -2.0, -0.5, -3.0, -1.0};
    TEST(mia_min_k(lp, 5, 0.4) == 2.5, "min-k 40%% of 5");
    TEST(mia_min_k(lp, 2, 0.4) == 2.0, "min-k floor 1");
    TEST(close_abs(mia_min_k(lp, 5, 1.0), 1.32, 1e-15), "min-k k = 1 is the LOSS score");
    TEST(mia_min_k(lp, 0, 0.4) == 0.0, "min-k of an empty answer is 0 (OU)");
    /* Min-K%++ on a hand-made distribution: row (0, ln 2, 0) -> p = (1/4, 1/2, 1/4),
     * log p = (-2 ln2, -ln2, -2 ln2); mu = sum p log p = -1.5 ln2; E[(log p)^2] = 2.5 ln2^2;
     * sigma^2 = 0.25 ln2^2 -> sigma = 0.5 ln2. Target 1: s = (-ln2 + 1.5 ln2)/(0.5 ln2) = 1;
     * target 0: s = -1. A uniform row has sigma^2 = 0 -> clamped to 1e-6 (sigma 1e-3), s = 0. */
    float skew[3] = {0.0f, (float)log(2.0), 0.0f}, flat[3] = {0.0f, 0.0f, 0.0f};
    double mu[3], sg[3], tl[3];
    minkpp_moments(skew, 3, &mu[0], &sg[0]);
    minkpp_moments(skew, 3, &mu[1], &sg[1]);
    minkpp_moments(flat, 3, &mu[2], &sg[2]);
    TEST(close_abs(mu[0], -1.5 * log(2.0), 1e-7) && close_abs(sg[0], 0.5 * log(2.0), 1e-7), "minkpp moments: mu %.9g sigma %.9g", mu[0], sg[0]);
    TEST(close_abs(mu[2], -log(3.0), 1e-12) && sg[2] == sqrt(1e-6), "minkpp clamps sigma^2 at 1e-6");
    tl[0] = logprob_at(skew, 3, 1);
    tl[1] = logprob_at(skew, 3, 0);
    tl[2] = logprob_at(flat, 3, 2);
    /* s = (1, -1, 0): k = 0.4 of T = 3 -> 1 lowest = -1 -> score 1; k = 1 -> -mean = 0. */
    TEST(close_abs(mia_min_k_pp(tl, mu, sg, 3, 0.4), 1.0, 1e-6), "min-k++ 40%%: %.9g", mia_min_k_pp(tl, mu, sg, 3, 0.4));
    TEST(close_abs(mia_min_k_pp(tl, mu, sg, 3, 1.0), 0.0, 1e-6), "min-k++ all positions");
    TEST(mia_min_k_pp(tl, mu, sg, 0, 0.4) == 0.0, "min-k++ empty = 0");
    /* AUC with ties. forget (label 0) = {0.1, 0.4, 0.35, 0.8}, holdout (label 1) = {0.4, 0.9, 0.1}.
     * Holdout 0.4 beats 0.1, 0.35, ties 0.4 -> 2.5; 0.9 beats all -> 4; 0.1 ties 0.1 -> 0.5.
     * AUC = 7/12 (scipy mannwhitneyu U / (n1 n2) = 0.5833333333333334). */
    double fo[4] = {0.1, 0.4, 0.35, 0.8}, ho[3] = {0.4, 0.9, 0.1};
    TEST(mia_auc(fo, 4, ho, 3) == 0.5833333333333334, "AUC with ties: %.17g", mia_auc(fo, 4, ho, 3));
    TEST(close_abs(roc_auc(ho, 3, fo, 4), 5.0 / 12.0, 1e-15), "AUC is antisymmetric under swapping the classes");
    double same[2] = {1.0, 1.0};
    TEST(roc_auc(same, 2, same, 2) == 0.5, "all ties -> 0.5");
    double lo[2] = {0.0, 0.1}, hi[2] = {0.5, 0.6};
    TEST(mia_auc(lo, 2, hi, 2) == 1.0, "forget scores all lower (memorised) -> AUC 1");
    /* Random data with ties against the O(n^2) pair count. */
    Rng rng;
    rng_seed(&rng, 42);
    double a[37], bb[23];
    for (int i = 0; i < 37; i++) a[i] = (double)rng_below(&rng, 9);
    for (int i = 0; i < 23; i++) bb[i] = (double)rng_below(&rng, 9) + 0.5 * (double)rng_below(&rng, 2);
    double u = 0;
    for (int i = 0; i < 37; i++)
        for (int j = 0; j < 23; j++) u += bb[j] > a[i] ? 1.0 : (bb[j] == a[i] ? 0.5 : 0.0);
    TEST(close_abs(roc_auc(a, 37, bb, 23), u / (37.0 * 23.0), 1e-15), "AUC vs pair count");
    /* PrivLeak (OU): AUC_unl 0.9, AUC_ret 0.5: ((0.1 - 0.5) / (0.5 + 1e-10)) * 100 ~ -80. */
    TEST(close_abs(privleak(0.9, 0.5), -80.0, 1e-6) && privleak(0.5, 0.5) == 0.0, "privleak %.17g", privleak(0.9, 0.5));
}

/* ----------------------------------------------------------------------------
 * Kolmogorov-Smirnov */

/* Exact two-sided p-value by enumerating every split of the pooled ranks (no ties):
 * P(D >= d) over the C(n1+n2, n1) equally likely arrangements. */
static double ks_brute(int n1, int n2, double d) {
    int N = n1 + n2;
    long hit = 0, tot = 0;
    for (unsigned mask = 0; mask < (1u << N); mask++) {
        int ones = 0;
        for (int i = 0; i < N; i++) ones += mask >> i & 1;
        if (ones != n1) continue;
        int c1 = 0, c2 = 0;
        double mx = 0;
        for (int i = 0; i < N; i++) {
            if (mask >> i & 1) c1++; else c2++;
            double diff = fabs((double)c1 / n1 - (double)c2 / n2);
            if (diff > mx) mx = diff;
        }
        tot++;
        if (mx >= d - 1e-12) hit++;
    }
    return (double)hit / (double)tot;
}

static void test_ks(void) {
    /* n1 = n2 = 3, disjoint: D = 1, h = 3. scipy's loop: k = 1 gives 0; k = 0 gives
     * (3/4)(2/5)(1/6) = 1/20 -> p = 2/20 = 0.1 (0.09999999999999999 after rounding, as scipy). */
    double x3[3] = {1, 2, 3}, y3[3] = {4, 5, 6};
    KsResult r = ks_2samp(x3, 3, y3, 3);
    TEST(r.statistic == 1.0 && r.pvalue == 0.09999999999999999 && r.method == KS_EXACT, "ks 3/3 disjoint: p %.17g", r.pvalue);
    r = ks_2samp(x3, 3, x3, 3);
    TEST(r.statistic == 0.0 && r.pvalue == 1.0, "ks identical samples: D 0, p 1");
    /* Unequal sizes, disjoint: only the 2 orderings "all x first" / "all y first" of the
     * C(5,2) = 10 reach D = 1 -> p = 0.2; for 3 vs 4: 2/C(7,3) = 2/35. */
    double x2[2] = {1, 2}, y34[4] = {4, 5, 6, 7};
    r = ks_2samp(x2, 2, y3 , 3);
    TEST(r.statistic == 1.0 && r.pvalue == 0.2, "ks 2/3 disjoint: p %.17g", r.pvalue);
    r = ks_2samp(x3, 3, y34, 4);
    TEST(r.statistic == 1.0 && r.pvalue == 0.05714285714285715 && close_abs(r.pvalue, 2.0 / 35, 1e-15), "ks 3/4 disjoint");
    double xa[3] = {0.1, 0.4, 0.7}, ya[4] = {0.2, 0.3, 0.5, 0.9};
    r = ks_2samp(xa, 3, ya, 4);
    TEST(r.statistic == 0.3333333333333333 && r.pvalue == 0.9714285714285715, "ks 3/4 interleaved: D %.17g p %.17g", r.statistic, r.pvalue);
    /* scipy values on fixed samples. */
    double x7[7] = {0.126, -0.132, 0.64, 0.105, -0.536, 0.362, 1.304};
    double y11[11] = {1.447, -0.204, -0.765, -0.123, 0.541, -1.825, 0.281, -0.746, -0.232, -0.044, 0.184};
    r = ks_2samp(x7, 7, y11, 11);
    TEST(r.statistic == 0.35064935064935066 && r.pvalue == 0.5533559577677224, "ks 7/11: D %.17g p %.17g", r.statistic, r.pvalue);
    double x40[40] = {0.41, 1.04, -0.13, 1.37, -0.67, 0.35, 0.9, 0.09, -0.74, -0.92, -0.46, 0.22, -1.01, -0.21, -0.16,
        0.54, 0.21, 0.36, -0.65, -0.13, 0.78, 1.49, -1.26, 1.51, 1.35, 0.78, 0.26, -0.31, 1.46, 1.96, 1.8, 1.32, 0.36,
        -1.21, -0.0, 0.66, -1.29, 0.4, 0.43, 0.7};
    double y40[40] = {-0.88, -0.36, -0.14, -0.87, 2.04, -0.2, 0.63, 0.04, 1.88, 1.62, 0.93, -1.9, 0.35, 0.98, 1.3, -0.32,
        2.12, -1.02, -0.36, 1.24, 0.35, 2.3, 0.49, -0.33, -0.08, -0.79, -0.98, 0.93, 0.88, 1.59, -0.45, 1.99, 0.01, 1.87,
        -0.13, -0.44, 0.55, 1.33, 0.46, -0.29};
    r = ks_2samp(x40, 40, y40, 40);
    TEST(r.statistic == 0.15 && r.pvalue == 0.7659314523482239, "ks 40/40 with ties: D %.17g p %.17g", r.statistic, r.pvalue);
    double x25[25] = {-1.34, -1.4, 0.5, 0.99, -0.16, -1.07, 0.87, -1.28, -0.71, 0.62, -2.25, 0.39, -0.58, 0.11, -0.08,
        0.2, 0.69, -0.76, 1.42, 0.73, 0.84, 1.16, 0.79, 0.84, 0.08};
    double y60[60] = {-0.83, 0.46, -0.17, -0.82, 0.86, 0.03, -0.43, -0.44, 0.87, 0.96, 1.92, 0.59, 1.64, 2.0, 1.75,
        -1.77, 1.83, 0.94, 1.02, 0.97, 0.98, 0.92, 0.24, -1.3, 0.49, -0.2, 1.68, 0.31, 0.68, -0.25, 0.09, 0.59, -0.89,
        0.9, 0.49, -0.59, -1.8, 1.11, 0.3, 0.07, 0.36, 2.42, 0.55, 0.69, -0.89, 2.25, 1.52, 1.67, 0.65, 1.52, 0.97,
        1.21, 0.45, -0.87, 1.63, -1.33, 0.36, 0.4, -0.44, 1.21};
    r = ks_2samp(x25, 25, y60, 60);
    TEST(r.statistic == 0.2633333333333333 && r.pvalue == 0.14347045545059967, "ks 25/60: D %.17g p %.17g", r.statistic, r.pvalue);
    /* scipy's fallback: n = 5 with D = 1/5 makes the exact loop return 1.0000000000000002,
     * outside [0, 1], so scipy switches to kstwo.sf(0.2, round(25/10) = 2) = 1 (D <= 0.5/2). */
    double x5[5] = {1, 3, 5, 7, 9}, y5[5] = {2, 4, 6, 8, 10};
    r = ks_2samp(x5, 5, y5, 5);
    TEST(r.statistic == 0.2 && r.pvalue == 1.0 && r.method == KS_ASYMP, "ks fallback n=5: p %.17g method %d", r.pvalue, r.method);
    double x60[60], y60b[60];
    for (int i = 0; i < 30; i++) { x60[2 * i] = 4 * i; x60[2 * i + 1] = 4 * i + 1; y60b[2 * i] = 4 * i + 2; y60b[2 * i + 1] = 4 * i + 3; }
    r = ks_2samp(x60, 60, y60b, 60);
    TEST(r.statistic == 0.03333333333333333 && r.pvalue == 0.9999999999987117 && r.method == KS_ASYMP,
         "ks fallback n=60 (h=2): D %.17g p %.17g", r.statistic, r.pvalue);
    /* Asymptotic mode (max(n1, n2) > 10000): x_i = 0.001 i (10001 values), y_j = 0.3 + 0.0007 j. */
    double *xb = xmalloc(10001 * sizeof(double)), yb[100];
    for (int i = 0; i < 10001; i++) xb[i] = i * 0.001;
    for (int j = 0; j < 100; j++) yb[j] = 0.3 + j * 0.0007;
    r = ks_2samp(xb, 10001, yb, 100);
    TEST(r.method == KS_ASYMP && r.statistic == 0.963003699630037 && close_rel(r.pvalue, 3.537540152013151e-142, 1e-12),
         "ks asymptotic: D %.17g p %.17g", r.statistic, r.pvalue);
    free(xb);
    /* Against brute-force enumeration for every size pair up to 6 x 6 and several D. */
    int bad = 0, cnt = 0;
    for (int n1 = 1; n1 <= 6; n1++)
        for (int n2 = 1; n2 <= 6; n2++)
            for (int shift = 0; shift <= n1 + n2; shift++) {
                double xs[6], ys[6];
                // x = ranks 0..n1-1 spread out, y interleaved with an offset: many different D
                for (int i = 0; i < n1; i++) xs[i] = 2.0 * i;
                for (int j = 0; j < n2; j++) ys[j] = 2.0 * j + shift - 0.5 * (shift % 2 == 0);
                KsResult q = ks_2samp(xs, n1, ys, n2);
                double want = ks_brute(n1, n2, q.statistic);
                cnt++;
                if (!close_abs(q.pvalue, want, 1e-12)) { bad++; printf("  ks %dx%d D %g: %.17g want %.17g\n", n1, n2, q.statistic, q.pvalue, want); }
            }
    TEST(bad == 0, "ks exact vs enumeration: %d of %d differ", bad, cnt);
    /* kstwo.sf, one value per branch of scipy's _kolmogn (scipy 1.10.1). */
    struct { int n; double d, want, rtol; } k[] = {
        {5, 0.15, 0.9988, 1e-14},                            // Ruben-Gambino, n x <= 1
        {5, 0.9, 1.9999999999999978e-05, 1e-13},             // Ruben-Gambino, n x >= n - 1
        {10, 0.6, 0.0005681672000000003, 1e-13},             // x >= 0.5: 2 smirnov
        {10, 0.2, 0.7487190399999999, 1e-13},                // Durbin matrix
        {100, 0.15, 0.019839242125643017, 1e-12},            // Pomeranz
        {100, 0.3, 1.7719869892662917e-08, 1e-12},           // n <= 140, n x^2 > 4: 2 smirnov
        {1000, 0.02, 0.8108971656895577, 1e-12},             // Pelz-Good
        {1000, 0.01, 0.9999496745370611, 1e-12},             // Durbin matrix, large n
        {1000, 0.06, 0.001428597887952891, 1e-11},           // n x^2 >= 2.2: 2 smirnov
        {1000, 0.7, 0.0, 0},                                 // underflow
        {200000, 0.003, 0.0545369786611305, 1e-10},          // Pelz-Good, n > 100000
        {3, 0.1, 1.0, 0}, {141, 0.002, 1.0, 0},              // below the support: sf = 1
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        double got = kstwo_sf(k[i].d, k[i].n);
        TEST(close_rel(got, k[i].want, k[i].rtol), "kstwo_sf(%g, %d) = %.17g want %.17g", k[i].d, k[i].n, got, k[i].want);
    }
    TEST(close_rel(smirnov_sf(7, 0.05), 0.93299521796875, 1e-13) && smirnov_sf(1, 0.25) == 0.75
         && close_rel(smirnov_sf(100, 0.3), 8.859934946331458e-09, 1e-12), "smirnov_sf");
}

/* ----------------------------------------------------------------------------
 * Aggregation */

static void test_agg(void) {
    MetricAgg a = {0};
    TEST(isnan(agg_mean(&a)), "empty accumulator mean is NaN");
    agg_add(&a, 1.0); agg_add(&a, 2.0); agg_add(&a, 4.5);
    TEST(a.n == 3 && agg_mean(&a) == 2.5, "accumulator mean");
    double v[3] = {1.0, 2.0, 4.5};
    TEST(mean_of(v, 3) == 2.5, "mean_of");
    double h[3] = {1.0, 0.5, 0.25}, hz[3] = {1.0, 0.0, 0.5};
    TEST(close_abs(harmonic_mean(h, 3), 3.0 / 7.0, 1e-15) && harmonic_mean(hz, 3) == 0.0, "harmonic mean; any 0 -> 0");
}

int main(void) {
    test_porter();
    test_python_strings();
    test_rouge();
    test_bleu();
    test_mllmu();
    test_probability();
    test_mia();
    test_ks();
    test_agg();
    return test_summary();
}
