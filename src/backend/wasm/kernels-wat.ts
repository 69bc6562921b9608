/**
 * Source of the WebAssembly SIMD kernels (four float32 lanes), assembled at load time by wabt in
 * `simd.ts`. The text is built here so that the exponential is written once and inlined into each
 * loop: V8 does not inline wasm calls, and a call per vector costs as much as the exponential.
 *
 * Every function reads and writes the module's memory at byte offsets its caller chose;
 * counts are in elements and a multiple of 4 (the caller pads). ASCII only: wabt's parser counts
 * bytes, not characters.
 */

/** Four equal float32 lanes. */
const f = (v: number | string): string => `(v128.const f32x4 ${v} ${v} ${v} ${v})`;
const i4 = (v: number): string => `(v128.const i32x4 ${v} ${v} ${v} ${v})`;

/** Locals `exp` uses; declare them in every function that inlines it. */
const EXP_LOCALS = '(local $ex v128) (local $ec v128) (local $en v128) (local $er v128) (local $ey v128) (local $ek v128) (local $eh v128)';

/**
 * Statements setting local $ey = e^$ex: 2^n * p(r) with n = round(x*log2(e)) and r = x - n*ln2
 * (ln2 in two parts, so r is exact), p of degree 7 (Cephes' expf), within about 1 ulp of float32.
 * 2^n is two factors 2^floor(n/2) * 2^(n - floor(n/2)) so that n = 128 needs no special case.
 * Results that would be subnormal are 0 (none reach the matrix products), results above the
 * largest float are +inf, and NaN stays NaN (pmin/pmax keep it, both compares are false).
 */
const EXP = `
    (local.set $ec (f32x4.pmax (f32x4.pmin (local.get $ex) ${f(88.72283)}) ${f(-87.3)}))
    (local.set $en (f32x4.floor (f32x4.add (f32x4.mul (local.get $ec) ${f(1.4426950408889634)}) ${f(0.5)})))
    (local.set $er (f32x4.sub (f32x4.sub (local.get $ec) (f32x4.mul (local.get $en) ${f(0.693359375)}))
      (f32x4.mul (local.get $en) ${f(-2.12194440e-4)})))
    (local.set $ey (f32x4.add (f32x4.mul ${f(1.98756915e-4)} (local.get $er)) ${f(1.39819995e-3)}))
    (local.set $ey (f32x4.add (f32x4.mul (local.get $ey) (local.get $er)) ${f(8.33345191e-3)}))
    (local.set $ey (f32x4.add (f32x4.mul (local.get $ey) (local.get $er)) ${f(4.16657959e-2)}))
    (local.set $ey (f32x4.add (f32x4.mul (local.get $ey) (local.get $er)) ${f(1.66666655e-1)}))
    (local.set $ey (f32x4.add (f32x4.mul (local.get $ey) (local.get $er)) ${f(5.00000012e-1)}))
    (local.set $ey (f32x4.add (f32x4.add (f32x4.mul (local.get $ey) (f32x4.mul (local.get $er) (local.get $er))) (local.get $er)) ${f(1)}))
    (local.set $ek (i32x4.trunc_sat_f32x4_s (local.get $en)))
    (local.set $eh (i32x4.shr_s (local.get $ek) (i32.const 1)))
    (local.set $ey (f32x4.mul (f32x4.mul (local.get $ey)
        (i32x4.shl (i32x4.add (local.get $eh) ${i4(127)}) (i32.const 23)))
        (i32x4.shl (i32x4.add (i32x4.sub (local.get $ek) (local.get $eh)) ${i4(127)}) (i32.const 23))))
    (local.set $ey (v128.andnot (local.get $ey) (f32x4.lt (local.get $ex) ${f(-87.3)})))
    (local.set $ey (v128.bitselect ${f('inf')} (local.get $ey) (f32x4.gt (local.get $ex) ${f(88.72283)})))`;

/** A loop over i = 0, 4, 8, ... < $n with $off = 4*i, running `body`. */
const loop = (body: string): string => `
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $off (i32.shl (local.get $i) (i32.const 2)))
        ${body}
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $next)))`;

const at = (base: string): string => `(i32.add (local.get ${base}) (local.get $off))`;

/** Most 64 KB pages the kernels' memory may grow to (1 GB): shared memories declare a maximum. */
export const MAX_PAGES = 16384;

export const KERNELS_WAT = `
(module
  ;; Shared, so that the helper thread can run kernels on the data the main thread copied in.
  (memory (import "env" "memory") 1 ${MAX_PAGES} shared)

  ;; out = SiLU(gate) * up = gate * up / (1 + e^-gate)
  (func (export "swiglu_forward") (param $gate i32) (param $up i32) (param $out i32) (param $n i32)
    (local $i i32) (local $off i32) (local $g v128) ${EXP_LOCALS}
    ${loop(`
      (local.set $g (v128.load ${at('$gate')}))
      (local.set $ex (f32x4.neg (local.get $g)))
      ${EXP}
      (v128.store ${at('$out')}
        (f32x4.mul (f32x4.div (local.get $g) (f32x4.add ${f(1)} (local.get $ey))) (v128.load ${at('$up')})))`)})

  ;; with s = sigmoid(gate): upInto (+)= grad * gate * s; gateInto (+)= grad * up * s * (1 + gate * (1 - s)),
  ;; each added to what is there when its flag ($gateAdd, $upAdd) is 1, else stored over it.
  (func (export "swiglu_backward") (param $gate i32) (param $up i32) (param $grad i32) (param $gateInto i32) (param $upInto i32) (param $n i32)
    (param $gateAdd i32) (param $upAdd i32)
    (local $i i32) (local $off i32) (local $g v128) (local $d v128) (local $s v128) (local $v v128) ${EXP_LOCALS}
    ${loop(`
      (local.set $g (v128.load ${at('$gate')}))
      (local.set $d (v128.load ${at('$grad')}))
      (local.set $ex (f32x4.neg (local.get $g)))
      ${EXP}
      (local.set $s (f32x4.div ${f(1)} (f32x4.add ${f(1)} (local.get $ey))))
      (local.set $v (f32x4.mul (local.get $d) (f32x4.mul (local.get $g) (local.get $s))))
      (if (local.get $upAdd) (then (local.set $v (f32x4.add (v128.load ${at('$upInto')}) (local.get $v)))))
      (v128.store ${at('$upInto')} (local.get $v))
      (local.set $v (f32x4.mul (f32x4.mul (f32x4.mul (local.get $d) (v128.load ${at('$up')})) (local.get $s))
        (f32x4.add ${f(1)} (f32x4.mul (local.get $g) (f32x4.sub ${f(1)} (local.get $s))))))
      (if (local.get $gateAdd) (then (local.set $v (f32x4.add (v128.load ${at('$gateInto')}) (local.get $v)))))
      (v128.store ${at('$gateInto')} (local.get $v))`)})

  ;; max of x[0, n), -inf for none; NaN entries are skipped (pmax keeps the running max).
  (func $max (export "max") (param $x i32) (param $n i32) (result f32)
    (local $i i32) (local $off i32) (local $m v128) (local $best f32)
    (local.set $m ${f('-inf')})
    ${loop(`(local.set $m (f32x4.pmax (local.get $m) (v128.load ${at('$x')})))`)}
    (local.set $best (f32x4.extract_lane 0 (local.get $m)))
    (local.set $best (select (f32x4.extract_lane 1 (local.get $m)) (local.get $best) (f32.gt (f32x4.extract_lane 1 (local.get $m)) (local.get $best))))
    (local.set $best (select (f32x4.extract_lane 2 (local.get $m)) (local.get $best) (f32.gt (f32x4.extract_lane 2 (local.get $m)) (local.get $best))))
    (select (f32x4.extract_lane 3 (local.get $m)) (local.get $best) (f32.gt (f32x4.extract_lane 3 (local.get $m)) (local.get $best))))

  ;; x = e^(x - shift) in place; returns the sum, accumulated in float64.
  (func $exp_shift_sum (export "exp_shift_sum") (param $x i32) (param $n i32) (param $shift f32) (result f64)
    (local $i i32) (local $off i32) (local $sh v128) (local $lo v128) (local $hi v128) ${EXP_LOCALS}
    (local.set $sh (f32x4.splat (local.get $shift)))
    ${loop(`
      (local.set $ex (f32x4.sub (v128.load ${at('$x')}) (local.get $sh)))
      ${EXP}
      (v128.store ${at('$x')} (local.get $ey))
      (local.set $lo (f64x2.add (local.get $lo) (f64x2.promote_low_f32x4 (local.get $ey))))
      (local.set $hi (f64x2.add (local.get $hi)
        (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $ey) (local.get $ey)))))`)}
    (local.set $lo (f64x2.add (local.get $lo) (local.get $hi)))
    (f64.add (f64x2.extract_lane 0 (local.get $lo)) (f64x2.extract_lane 1 (local.get $lo))))

  ;; x *= k
  (func $scale (export "scale") (param $x i32) (param $n i32) (param $k f32)
    (local $i i32) (local $off i32) (local $kv v128)
    (local.set $kv (f32x4.splat (local.get $k)))
    ${loop(`(v128.store ${at('$x')} (f32x4.mul (v128.load ${at('$x')}) (local.get $kv)))`)})
  ;; x[0, n) = 0
  (func $zero (param $x i32) (param $n i32)
    (local $i i32) (local $off i32)
    ${loop(`(v128.store ${at('$x')} (v128.const i32x4 0 0 0 0))`)})

  ;; Softmax of $rows rows of $cols in place, rows $stride apart ($stride a multiple of 4, at
  ;; least $cols). Row r is taken over its first end = min($cols, $end0 + r) entries when
  ;; $causal (else all $cols); the rest of the row up to $stride, and every entry of a row whose
  ;; max is -inf, become 0. One call per block of rows: a call from JavaScript per row cost more
  ;; than the row's arithmetic.
  (func (export "softmax_rows") (param $x i32) (param $rows i32) (param $cols i32) (param $stride i32) (param $end0 i32) (param $causal i32)
    (local $r i32) (local $end i32) (local $n i32) (local $j i32) (local $m f32)
    (block $rows_done
      (loop $row
        (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $end (local.get $cols))
        (if (local.get $causal)
          (then (if (i32.lt_s (i32.add (local.get $end0) (local.get $r)) (local.get $cols))
            (then (local.set $end (i32.add (local.get $end0) (local.get $r)))))))
        (local.set $n (i32.and (i32.add (local.get $end) (i32.const 3)) (i32.const -4)))
        (local.set $j (local.get $end))
        (block $pad_done
          (loop $pad
            (br_if $pad_done (i32.ge_u (local.get $j) (local.get $n)))
            (f32.store (i32.add (local.get $x) (i32.shl (local.get $j) (i32.const 2))) (f32.const -inf))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $pad)))
        (local.set $m (call $max (local.get $x) (local.get $n)))
        (if (f32.eq (local.get $m) (f32.const -inf))
          (then (call $zero (local.get $x) (local.get $stride)))
          (else
            (call $scale (local.get $x) (local.get $n)
              (f32.demote_f64 (f64.div (f64.const 1) (call $exp_shift_sum (local.get $x) (local.get $n) (local.get $m)))))
            (call $zero (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))) (i32.sub (local.get $stride) (local.get $n)))))
        (local.set $x (i32.add (local.get $x) (i32.shl (local.get $stride) (i32.const 2))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $row))))

  ;; y += alpha * x
  (func (export "axpy") (param $x i32) (param $y i32) (param $n i32) (param $alpha f32)
    (local $i i32) (local $off i32) (local $a v128)
    (local.set $a (f32x4.splat (local.get $alpha)))
    ${loop(`(v128.store ${at('$y')} (f32x4.add (v128.load ${at('$y')}) (f32x4.mul (local.get $a) (v128.load ${at('$x')}))))`)})

  ;; Softmax's backward over $rows rows of $cols (a multiple of 4), in place in dp:
  ;; dp = p * (dp - sum_j dp_j * p_j) * scale, the dot product accumulated in float64.
  (func (export "softmax_backward") (param $p i32) (param $dp i32) (param $rows i32) (param $cols i32) (param $scale f32)
    (local $r i32) (local $i i32) (local $off i32) (local $n i32) (local $prod v128) (local $lo v128) (local $hi v128)
    (local $dot v128) (local $sc v128)
    (local.set $sc (f32x4.splat (local.get $scale)))
    (local.set $n (local.get $cols))
    (block $rows_done
      (loop $row
        (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $lo (v128.const i32x4 0 0 0 0))
        (local.set $hi (v128.const i32x4 0 0 0 0))
        (local.set $i (i32.const 0))
        ${loop(`
          (local.set $prod (f32x4.mul (v128.load ${at('$p')}) (v128.load ${at('$dp')})))
          (local.set $lo (f64x2.add (local.get $lo) (f64x2.promote_low_f32x4 (local.get $prod))))
          (local.set $hi (f64x2.add (local.get $hi)
            (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $prod) (local.get $prod)))))`)}
        (local.set $lo (f64x2.add (local.get $lo) (local.get $hi)))
        (local.set $dot (f32x4.splat (f32.demote_f64 (f64.add (f64x2.extract_lane 0 (local.get $lo)) (f64x2.extract_lane 1 (local.get $lo))))))
        (local.set $i (i32.const 0))
        ${loop(`
          (v128.store ${at('$dp')}
            (f32x4.mul (f32x4.mul (v128.load ${at('$p')}) (f32x4.sub (v128.load ${at('$dp')}) (local.get $dot))) (local.get $sc)))`)}
        (local.set $p (i32.add (local.get $p) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $dp (i32.add (local.get $dp) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $row))))
  ;; Sum of a[i]*b[i] (and of a[i]*b[i]*c[i] when $c >= 0) over i < $n, in float64 lanes.
  (func $dot (param $a i32) (param $b i32) (param $c i32) (param $n i32) (result f64)
    (local $i i32) (local $off i32) (local $prod v128) (local $lo v128) (local $hi v128)
    ${loop(`
      (local.set $prod (f32x4.mul (v128.load ${at('$a')}) (v128.load ${at('$b')})))
      (if (i32.ge_s (local.get $c) (i32.const 0))
        (then (local.set $prod (f32x4.mul (local.get $prod) (v128.load ${at('$c')})))))
      (local.set $lo (f64x2.add (local.get $lo) (f64x2.promote_low_f32x4 (local.get $prod))))
      (local.set $hi (f64x2.add (local.get $hi)
        (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $prod) (local.get $prod)))))`)}
    (local.set $lo (f64x2.add (local.get $lo) (local.get $hi)))
    (f64.add (f64x2.extract_lane 0 (local.get $lo)) (f64x2.extract_lane 1 (local.get $lo))))

  ;; RMSNorm over $rows rows of $cols (a multiple of 4): out = x * inv * w with
  ;; inv = 1/sqrt(mean(x^2) + eps), kept per row in $invRms when $invRms >= 0.
  (func (export "rms_norm_forward") (param $x i32) (param $w i32) (param $out i32) (param $invRms i32) (param $rows i32) (param $cols i32) (param $eps f64)
    (local $r i32) (local $i i32) (local $off i32) (local $n i32) (local $inv f32) (local $iv v128)
    (local.set $n (local.get $cols))
    (block $rows_done
      (loop $row
        (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $inv (f32.demote_f64 (f64.div (f64.const 1)
          (f64.sqrt (f64.add (f64.div (call $dot (local.get $x) (local.get $x) (i32.const -1) (local.get $cols)) (f64.convert_i32_u (local.get $cols))) (local.get $eps))))))
        (if (i32.ge_s (local.get $invRms) (i32.const 0))
          (then (f32.store (i32.add (local.get $invRms) (i32.shl (local.get $r) (i32.const 2))) (local.get $inv))))
        (local.set $iv (f32x4.splat (local.get $inv)))
        (local.set $i (i32.const 0))
        ${loop(`(v128.store ${at('$out')} (f32x4.mul (f32x4.mul (v128.load ${at('$x')}) (local.get $iv)) (v128.load ${at('$w')})))`)}
        (local.set $x (i32.add (local.get $x) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $out (i32.add (local.get $out) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $row))))

  ;; RMSNorm's backward for the input: xInto += inv * (g*w - x*k), k = inv^2 * sum(g*w*x) / cols.
  (func (export "rms_norm_backward_input") (param $x i32) (param $w i32) (param $invRms i32) (param $grad i32) (param $xInto i32) (param $rows i32) (param $cols i32)
    (local $r i32) (local $i i32) (local $off i32) (local $n i32) (local $inv f32) (local $iv v128) (local $kv v128)
    (local.set $n (local.get $cols))
    (block $rows_done
      (loop $row
        (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $inv (f32.load (i32.add (local.get $invRms) (i32.shl (local.get $r) (i32.const 2)))))
        (local.set $iv (f32x4.splat (local.get $inv)))
        (local.set $kv (f32x4.splat (f32.demote_f64 (f64.div
          (f64.mul (call $dot (local.get $grad) (local.get $w) (local.get $x) (local.get $cols))
            (f64.mul (f64.promote_f32 (local.get $inv)) (f64.promote_f32 (local.get $inv))))
          (f64.convert_i32_u (local.get $cols))))))
        (local.set $i (i32.const 0))
        ${loop(`
          (v128.store ${at('$xInto')}
            (f32x4.add (v128.load ${at('$xInto')})
              (f32x4.mul (local.get $iv)
                (f32x4.sub (f32x4.mul (v128.load ${at('$grad')}) (v128.load ${at('$w')}))
                  (f32x4.mul (v128.load ${at('$x')}) (local.get $kv))))))`)}
        (local.set $x (i32.add (local.get $x) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $grad (i32.add (local.get $grad) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $xInto (i32.add (local.get $xInto) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $row))))
  ;; bf16 bit patterns (u16) to float32: the pattern becomes the high half. $n is a multiple of 8.
  (func (export "widen_bf16") (param $src i32) (param $dst i32) (param $n i32)
    (local $i i32) (local $h v128)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $h (v128.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1)))))
        (v128.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (i32x4.shl (i32x4.extend_low_i16x8_u (local.get $h)) (i32.const 16)))
        (v128.store (i32.add (local.get $dst) (i32.add (i32.shl (local.get $i) (i32.const 2)) (i32.const 16)))
          (i32x4.shl (i32x4.extend_high_i16x8_u (local.get $h)) (i32.const 16)))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))
)
`;