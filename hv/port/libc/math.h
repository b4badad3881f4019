// The double-precision maths MicroPython's lib/libm_dbl supplies, and the classification macros.
#pragma once

// x86-64 evaluates in SSE at declared precision (FLT_EVAL_METHOD 0).
typedef float float_t;
typedef double double_t;

#define NAN         (__builtin_nan(""))
#define INFINITY    (__builtin_inf())
#define HUGE_VAL    (__builtin_huge_val())
#define M_PI        3.14159265358979323846
#define M_E         2.7182818284590452354

#define FP_NAN       0
#define FP_INFINITE  1
#define FP_ZERO      2
#define FP_SUBNORMAL 3
#define FP_NORMAL    4

#define fpclassify(x) __builtin_fpclassify(FP_NAN, FP_INFINITE, FP_NORMAL, FP_SUBNORMAL, FP_ZERO, x)
#define isnan(x)      __builtin_isnan(x)
#define isinf(x)      __builtin_isinf_sign(x)
#define isfinite(x)   __builtin_isfinite(x)
#define signbit(x)    __builtin_signbit(x)

double acos(double);
double acosh(double);
double asin(double);
double asinh(double);
double atan(double);
double atan2(double, double);
double atanh(double);
double ceil(double);
#define copysign(x, y) __builtin_copysign(x, y)
double cos(double);
double cosh(double);
double erf(double);
double erfc(double);
double exp(double);
double expm1(double);
#define fabs(x)     __builtin_fabs(x)
double floor(double);
double fmod(double, double);
double frexp(double, int *);
double ldexp(double, int);
double lgamma(double);
double log(double);
double log10(double);
double log1p(double);
double log2(double);
double modf(double, double *);
double nearbyint(double);
double pow(double, double);
double rint(double);
double round(double);
double scalbn(double, int);
double sin(double);
double sinh(double);
double sqrt(double);
double tan(double);
double tanh(double);
double tgamma(double);
double trunc(double);
#define nan(s)      __builtin_nan(s)
#define nanf(s)     __builtin_nanf(s)
