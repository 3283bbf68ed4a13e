//! Element-wise maths the compiler can vectorise, and loops compiled twice: once for the
//! build's baseline and once for AVX2 + FMA, chosen at run time.
//!
//! libm's `expf` is a scalar call, so a loop over `exp` runs one value at a time; SwiGLU
//! and the attention softmax spend most of their time there. [`exp`] is the usual range
//! reduction and polynomial, branch-free, so the same loop becomes 8-wide on AVX2. Both
//! compilations do the same operations in the same order (Rust never fuses `a * b + c` into
//! an FMA by itself), so they give the same bits.

/// `e^x` within 2 ulp of the true value: 0 below −87.33 (where `e^x` is subnormal), +∞
/// above 88.37 (where `e^x` is within 30 % of `f32::MAX`), NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LO: f32 = -87.336_55;
    // ln(2¹²⁸ / √2): above it n would be 128, whose 2ⁿ has no f32.
    const HI: f32 = 88.376_26;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so `n · LN2_HI` is exact for |n| ≤ 128.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding and subtracting it rounds to the nearest integer (ties to even)
    // with two plain additions, which vectorise on every x86-64.
    const ROUND: f32 = 12_582_912.0;
    let c = x.clamp(LO, HI);
    let t = c * LOG2E + ROUND;
    let n = t - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    // e^r on |r| ≤ ln2 / 2 (Cephes' minimax coefficients).
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    // 2ⁿ, n in [−126, 127]. t's low mantissa bits hold n itself (t and ROUND share an
    // exponent), so no float-to-int conversion is needed: Rust's saturating one does not
    // vectorise.
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let y = p * two_n;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        y
    }
}

/// `x σ(x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `σ(x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `Σ a·b` in eight independent sums, which the compiler keeps in one vector register: a
/// single running sum is a chain of dependent adds that cannot vectorise.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ (a·b)·c`, summed as [`dot`].
#[inline(always)]
pub fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb, cc) = (a.chunks_exact(8), b.chunks_exact(8), c.chunks_exact(8));
    let tail: f32 = (ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder()))
    .map(|((x, y), z)| x * y * z)
    .sum();
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l] * z[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
pub fn has_avx2_fma() -> bool {
    // The standard library caches the CPUID answer: this is an atomic load.
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `fn name(args) body`, compiled for the baseline and for AVX2 + FMA; calls pick the
/// second on CPUs that have it. The body must not depend on which it runs as.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            $(#[$m])*
            #[inline(always)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                $(#[$m])*
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    imp($($arg),*)
                }
                if $crate::model::elementwise::has_avx2_fma() {
                    // SAFETY: the CPU has AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}
pub(crate) use multiversion;

multiversion! {
    /// `y = e^(x − shift)` over a slice; returns `Σ y`.
    pub fn exp_shifted(y: &mut [f32], shift: f32) -> f32 {
        let mut sum = 0f32;
        for v in y.iter_mut() {
            *v = exp(*v - shift);
            sum += *v;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite f32s of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_true_value_over_its_range() {
        let mut worst = 0;
        let mut x = -87.3f32;
        while x < 88.37 {
            let want = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp(x), want));
            x += 0.000_731;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        // Edges, the values softmax needs exactly, and what is outside the range.
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(-88.0), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(ulps(exp(1.0), std::f32::consts::E) <= 1);
        assert!(ulps(silu(-3.0), (-3.0f64 / (1.0 + 3f64.exp())) as f32) <= 3);
        assert_eq!(silu(-200.0), 0.0);
        assert_eq!(silu(200.0), 200.0);
        assert!(ulps(sigmoid(0.5), (1.0 / (1.0 + (-0.5f64).exp())) as f32) <= 3);
    }

    #[test]
    fn dots_match_a_sum_in_f64() {
        // 8-lane bodies and a tail of 3.
        let a: Vec<f32> = (0..67).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..67).map(|i| (i as f32 * 0.11).cos()).collect();
        let c: Vec<f32> = (0..67).map(|i| 1.0 + i as f32 / 67.0).collect();
        let want2: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let want3: f64 = (a.iter().zip(&b).zip(&c))
            .map(|((x, y), z)| *x as f64 * *y as f64 * *z as f64)
            .sum();
        assert!((dot(&a, &b) as f64 - want2).abs() < 1e-5);
        assert!((dot3(&a, &b, &c) as f64 - want3).abs() < 1e-5);
        assert_eq!(
            dot(&a[..5], &b[..5]),
            (0..5).map(|i| a[i] * b[i]).sum::<f32>()
        );
    }

    #[test]
    fn both_compilations_give_the_same_bits() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.173).collect();
        let mut a = xs.clone();
        let sum = exp_shifted(&mut a, 1.5);
        let want: Vec<f32> = xs.iter().map(|x| exp(x - 1.5)).collect();
        assert_eq!(a, want);
        assert_eq!(sum, want.iter().sum::<f32>());
    }
}
