/*
 * Training in C alone: a network exported by symnet (net.h, net.c) learns from a
 * CSV file by minibatch SGD with the Robbins–Monro step size
 *     η_t = η_0 / (1 + t/τ)      (Σ η_t = ∞, Σ η_t² < ∞),
 * then prints the loss and the accuracy on held-out rows.  No Python anywhere.
 *
 *     python examples/export/prepare.py
 *     python -m symnet export examples/export/model.npz --name net --out examples/export
 *     cc -std=c99 -O2 -o train examples/export/main.c examples/export/net.c -lm
 *     ./train examples/export/digits.csv [epochs] [eta0] [tau] [batch]
 *
 * Each CSV row holds NET_N_INPUTS features, then either NET_N_OUTPUTS targets or a
 * single class label 0..NET_N_OUTPUTS-1 (turned into a one-hot row).  The rows are
 * shuffled with a fixed seed; the last fifth is held out for testing.  The network
 * starts from the parameters it was exported with (net_trained_params).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net.h"

typedef NET_REAL real;

/* xorshift64*: a small, seeded random generator, the same on every machine */
static unsigned long long rng_state = 88172645463325252ULL;
static unsigned long long next_random(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

/* idx ← a uniformly random permutation of idx (Fisher–Yates) */
static void shuffle(long long *idx, long long n)
{
    for (long long i = n - 1; i > 0; i--) {
        const long long j = (long long)(next_random() % (unsigned long long)(i + 1));
        const long long v = idx[i];
        idx[i] = idx[j];
        idx[j] = v;
    }
}

/* Reads the CSV into X (rows × NET_N_INPUTS) and T (rows × NET_N_OUTPUTS); returns
 * the number of rows, or -1 with a message. */
static long long read_csv(const char *path, real **X, real **T)
{
    FILE *fh = fopen(path, "r");
    if (fh == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        return -1;
    }
    long long rows = 0, cap = 1024;
    *X = malloc(sizeof(real) * (size_t)cap * NET_N_INPUTS);
    *T = malloc(sizeof(real) * (size_t)cap * NET_N_OUTPUTS);
    static char line[1 << 16];
    double v[NET_N_INPUTS + NET_N_OUTPUTS];
    while (*X != NULL && *T != NULL && fgets(line, sizeof line, fh) != NULL) {
        int n = 0;
        for (char *p = line, *end; n < NET_N_INPUTS + NET_N_OUTPUTS; p = end + 1) {
            v[n] = strtod(p, &end);
            if (end == p)
                break;
            n++;
            if (*end != ',')
                break;
        }
        if (n == 0)
            continue;  /* an empty line */
        if (n != NET_N_INPUTS + NET_N_OUTPUTS && n != NET_N_INPUTS + 1) {
            fprintf(stderr, "%s, row %lld: %d numbers, expected %d (features and targets) "
                    "or %d (features and a class label)\n", path, rows + 1, n,
                    NET_N_INPUTS + NET_N_OUTPUTS, NET_N_INPUTS + 1);
            fclose(fh);
            return -1;
        }
        if (rows == cap) {
            cap *= 2;
            *X = realloc(*X, sizeof(real) * (size_t)cap * NET_N_INPUTS);
            *T = realloc(*T, sizeof(real) * (size_t)cap * NET_N_OUTPUTS);
            if (*X == NULL || *T == NULL)
                break;
        }
        real *x = *X + rows * NET_N_INPUTS, *t = *T + rows * NET_N_OUTPUTS;
        for (int j = 0; j < NET_N_INPUTS; j++)
            x[j] = (real)v[j];
        for (int k = 0; k < NET_N_OUTPUTS; k++)
            t[k] = n == NET_N_INPUTS + 1 && NET_N_OUTPUTS > 1
                   ? (real)((int)v[NET_N_INPUTS] == k) : (real)v[NET_N_INPUTS + k];
        rows++;
    }
    fclose(fh);
    if (*X == NULL || *T == NULL) {
        fprintf(stderr, "out of memory reading %s\n", path);
        return -1;
    }
    return rows;
}

/* Share of rows predicted right: the largest output is the target's largest
 * (several outputs), or output > 0.5 iff target > 0.5 (one output). */
static double accuracy(const real *params, const real *X, const real *T, long long rows,
                       int batch, real *O, real *work)
{
    long long right = 0;
    for (long long s = 0; s < rows; s += batch) {
        const int b = (int)(rows - s < batch ? rows - s : batch);
        net_forward(params, X + s * NET_N_INPUTS, b, O, work);
        for (int r = 0; r < b; r++) {
            const real *o = O + r * NET_N_OUTPUTS, *t = T + (s + r) * NET_N_OUTPUTS;
            if (NET_N_OUTPUTS == 1) {
                right += (o[0] > (real)0.5) == (t[0] > (real)0.5);
            } else {
                int ko = 0, kt = 0;
                for (int k = 1; k < NET_N_OUTPUTS; k++) {
                    ko = o[k] > o[ko] ? k : ko;
                    kt = t[k] > t[kt] ? k : kt;
                }
                right += ko == kt;
            }
        }
    }
    return (double)right / (double)rows;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s data.csv [epochs=60] [eta0=0.2] [tau=500] [batch=32]\n",
                argv[0]);
        return 2;
    }
    const int epochs = argc > 2 ? atoi(argv[2]) : 60;
    const double eta0 = argc > 3 ? atof(argv[3]) : 0.2;
    const double tau = argc > 4 ? atof(argv[4]) : 500;
    const int batch = argc > 5 ? atoi(argv[5]) : 32;
    if (epochs < 1 || batch < 1 || !(eta0 > 0) || !(tau > 0)) {
        fprintf(stderr, "epochs, eta0, tau and batch must be positive\n");
        return 2;
    }
    real *X, *T;
    const long long rows = read_csv(argv[1], &X, &T);
    if (rows < 0)
        return 1;
    if (rows < 5) {
        fprintf(stderr, "%s: %lld rows; need at least 5\n", argv[1], rows);
        return 1;
    }

    /* shuffle the rows once, then train on the first 80 %, test on the rest */
    long long *idx = malloc(sizeof(long long) * (size_t)rows);
    real *Xs = malloc(sizeof(real) * (size_t)rows * NET_N_INPUTS);
    real *Ts = malloc(sizeof(real) * (size_t)rows * NET_N_OUTPUTS);
    /* every buffer the network's functions use, allocated here, once */
    real *params = malloc(sizeof(real) * NET_N_PARAMS);
    real *work = malloc(sizeof(real) * (size_t)NET_TRAIN_WORK_SIZE(batch));
    real *O = malloc(sizeof(real) * (size_t)batch * NET_N_OUTPUTS);
    const long long n_train = rows * 4 / 5, n_test = rows - n_train;
    const long long per_epoch = (n_train + batch - 1) / batch;
    double *lr = malloc(sizeof(double) * (size_t)per_epoch);
    double *losses = malloc(sizeof(double) * (size_t)per_epoch);
    if (!idx || !Xs || !Ts || !params || !work || !O || !lr || !losses) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (long long i = 0; i < rows; i++)
        idx[i] = i;
    shuffle(idx, rows);
    for (long long i = 0; i < rows; i++) {
        memcpy(Xs + i * NET_N_INPUTS, X + idx[i] * NET_N_INPUTS, sizeof(real) * NET_N_INPUTS);
        memcpy(Ts + i * NET_N_OUTPUTS, T + idx[i] * NET_N_OUTPUTS, sizeof(real) * NET_N_OUTPUTS);
    }
    const real *Xte = Xs + n_train * NET_N_INPUTS, *Tte = Ts + n_train * NET_N_OUTPUTS;
    memcpy(params, net_trained_params, sizeof(real) * NET_N_PARAMS);
    printf("%lld rows: %lld to train, %lld to test; %d inputs, %d outputs, %d parameters\n",
           rows, n_train, n_test, NET_N_INPUTS, NET_N_OUTPUTS, NET_N_PARAMS);
    printf("minibatch SGD, batch %d, eta_t = %g / (1 + t/%g), %d epochs\n", batch, eta0, tau,
           epochs);

    const double hyper[6] = {0, 0, 0, 0, 0, 0};  /* plain SGD: no optimizer constants */
    long long t = 0;
    for (int epoch = 1; epoch <= epochs; epoch++) {
        for (long long i = 0; i < n_train; i++)
            idx[i] = i;
        shuffle(idx, n_train);
        for (long long s = 0; s < per_epoch; s++)
            lr[s] = eta0 / (1 + (double)(t + s) / tau);   /* Robbins–Monro */
        const long long done = net_train(params, Xs, Ts, idx, n_train, batch, lr, losses,
                                         NET_SGD, NULL, NULL, hyper, t, NULL, NULL, NULL,
                                         work);
        if (done < per_epoch) {
            printf("epoch %d: the loss became NaN or inf after %lld steps; stopping\n",
                   epoch, t + done);
            return 1;
        }
        t += done;
        /* the epoch's loss: the mean of its batch losses, each batch weighted by its size */
        double loss = 0;
        for (long long s = 0; s < per_epoch; s++) {
            const long long b = s < per_epoch - 1 || n_train % batch == 0 ? batch
                                                                          : n_train % batch;
            loss += losses[s] * (double)b;
        }
        loss /= (double)n_train;
        if (epoch == 1 || epoch == epochs || epoch % 10 == 0)
            printf("epoch %3d  loss %.4f  train accuracy %.2f%%  test accuracy %.2f%%\n",
                   epoch, loss, 100 * accuracy(params, Xs, Ts, n_train, batch, O, work),
                   100 * accuracy(params, Xte, Tte, n_test, batch, O, work));
    }
    /* the test loss, a batch at a time (work holds one batch) */
    double test_loss = 0;
    for (long long s = 0; s < n_test; s += batch) {
        const int b = (int)(n_test - s < batch ? n_test - s : batch);
        test_loss += b * (double)net_loss(params, Xte + s * NET_N_INPUTS,
                                          Tte + s * NET_N_OUTPUTS, b, work);
    }
    printf("test loss %.4f\n", test_loss / (double)n_test);
    free(idx); free(Xs); free(Ts); free(params); free(work); free(O); free(lr); free(losses);
    free(X); free(T);
    return 0;
}
