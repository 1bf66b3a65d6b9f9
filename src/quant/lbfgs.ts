/**
 * L-BFGS with a strong-Wolfe line search, the algorithm of torch.optim.LBFGS (one `step` with
 * line_search_fn='strong_wolfe'), which the EntQuant reference runs: the two-loop recursion over up to
 * `historySize` curvature pairs (a pair is kept only when yᵀs > 1e-10), H₀ = yᵀs / yᵀy, a first step of
 * min(1, 1/‖g‖₁)·lr, then lr; the line search brackets with cubic interpolation (c1 = 1e-4, c2 = 0.9, at
 * most 25 evaluations) and zooms; the run stops after maxIterations, after maxEvaluations (default
 * 1.25 × maxIterations) objective evaluations, when ‖g‖∞ ≤ 1e-7, or when the step, the directional
 * derivative or the change of the objective falls below 1e-9.
 */

/** f(x) and ∇f(x). */
export interface Evaluation {
  value: number;
  gradient: Float64Array;
}

/** The objective: evaluates at x (must not keep or modify x). */
export type Objective = (x: Float64Array) => Promise<Evaluation>;

export interface LbfgsOptions {
  lr: number;
  maxIterations: number;
  maxEvaluations?: number;
  historySize: number;
}

const TOLERANCE_GRAD = 1e-7;
const TOLERANCE_CHANGE = 1e-9;
const WOLFE_C1 = 1e-4;
const WOLFE_C2 = 0.9;
const MAX_LINE_SEARCH = 25;

function dot(a: Float64Array, b: Float64Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

function maxAbs(a: Float64Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]!));
  return max;
}

/**
 * Minimiser of the cubic through (x1, f1, g1), (x2, f2, g2), clamped to `bounds` (default: between the
 * points); the middle of the bounds when the cubic has no minimum.
 */
function cubicMinimum(x1: number, f1: number, g1: number, x2: number, f2: number, g2: number, bounds?: [number, number]): number {
  const [low, high] = bounds ?? (x1 <= x2 ? [x1, x2] : [x2, x1]);
  const d1 = g1 + g2 - (3 * (f1 - f2)) / (x1 - x2);
  const d2Square = d1 * d1 - g1 * g2;
  if (d2Square < 0) return (low + high) / 2;
  const d2 = Math.sqrt(d2Square);
  const minimum = x1 <= x2
    ? x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    : x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2));
  return Math.min(Math.max(minimum, low), high);
}

/** A point on the search line: step t, f, gradient, and the directional derivative gᵀd. */
interface LinePoint {
  t: number;
  value: number;
  gradient: Float64Array;
  slope: number;
}

/**
 * Strong-Wolfe line search from x along d (torch's _strong_wolfe): returns the accepted point and the
 * number of evaluations it took.
 */
async function strongWolfe(
  objective: Objective, x: Float64Array, initialStep: number, d: Float64Array, start: LinePoint,
): Promise<{ point: LinePoint; evaluations: number }> {
  const dNorm = maxAbs(d);
  const trial = new Float64Array(x.length);
  const evaluateAt = async (t: number): Promise<LinePoint> => {
    for (let i = 0; i < x.length; i++) trial[i] = x[i]! + t * d[i]!;
    const { value, gradient } = await objective(trial);
    return { t, value, gradient, slope: dot(gradient, d) };
  };
  let current = await evaluateAt(initialStep);
  let evaluations = 1;
  let previous: LinePoint = start;
  let bracket: LinePoint[] | null = null;
  let done = false;
  let iteration = 0;
  while (iteration < MAX_LINE_SEARCH) {
    if (current.value > start.value + WOLFE_C1 * current.t * start.slope || (iteration > 1 && current.value >= previous.value)) {
      bracket = [previous, current];
      break;
    }
    if (Math.abs(current.slope) <= -WOLFE_C2 * start.slope) {
      bracket = [current];
      done = true;
      break;
    }
    if (current.slope >= 0) {
      bracket = [previous, current];
      break;
    }
    const minStep = current.t + 0.01 * (current.t - previous.t);
    const maxStep = current.t * 10;
    const next = cubicMinimum(previous.t, previous.value, previous.slope, current.t, current.value, current.slope, [minStep, maxStep]);
    previous = current;
    current = await evaluateAt(next);
    evaluations++;
    iteration++;
  }
  if (iteration === MAX_LINE_SEARCH) bracket = [{ ...start, t: 0 }, current];
  const points = bracket!;

  // Zoom: shrink the bracket until a point satisfies the strong Wolfe conditions.
  let insufficientProgress = false;
  let [low, high] = points.length > 1 && points[0]!.value > points[1]!.value ? [1, 0] : [0, 1];
  while (!done && iteration < MAX_LINE_SEARCH && points.length > 1) {
    const a = points[0]!;
    const b = points[1]!;
    if (Math.abs(b.t - a.t) * dNorm < TOLERANCE_CHANGE) break;
    let t = cubicMinimum(a.t, a.value, a.slope, b.t, b.value, b.slope);
    const top = Math.max(a.t, b.t);
    const bottom = Math.min(a.t, b.t);
    const margin = 0.1 * (top - bottom);
    if (Math.min(top - t, t - bottom) < margin) {
      if (insufficientProgress || t >= top || t <= bottom) {
        t = Math.abs(t - top) < Math.abs(t - bottom) ? top - margin : bottom + margin;
        insufficientProgress = false;
      } else {
        insufficientProgress = true;
      }
    } else {
      insufficientProgress = false;
    }
    const point = await evaluateAt(t);
    evaluations++;
    iteration++;
    if (point.value > start.value + WOLFE_C1 * t * start.slope || point.value >= points[low]!.value) {
      points[high] = point;
      [low, high] = points[0]!.value <= points[1]!.value ? [0, 1] : [1, 0];
    } else {
      if (Math.abs(point.slope) <= -WOLFE_C2 * start.slope) {
        done = true;
      } else if (point.slope * (points[high]!.t - points[low]!.t) >= 0) {
        points[high] = points[low]!;
      }
      points[low] = point;
    }
  }
  return { point: points.length > 1 ? points[low]! : points[0]!, evaluations };
}

/** Runs L-BFGS from x0; returns the final x, its objective value and the evaluations spent. */
export async function minimizeLbfgs(
  objective: Objective, x0: Float64Array, options: LbfgsOptions,
): Promise<{ x: Float64Array; value: number; evaluations: number; iterations: number }> {
  const maxEvaluations = options.maxEvaluations ?? Math.floor((options.maxIterations * 5) / 4);
  const x = Float64Array.from(x0);
  let { value, gradient } = await objective(x);
  let evaluations = 1;
  if (maxAbs(gradient) <= TOLERANCE_GRAD) return { x, value, evaluations, iterations: 0 };

  const steps: Float64Array[] = [];
  const gradientChanges: Float64Array[] = [];
  const inverseCurvatures: number[] = [];
  const alphas = new Float64Array(options.historySize);
  let direction = new Float64Array(x.length);
  let previousGradient = new Float64Array(x.length);
  let stepLength = 0;
  let hessianScale = 1;
  let iterations = 0;
  while (iterations < options.maxIterations) {
    iterations++;
    if (iterations === 1) {
      for (let i = 0; i < x.length; i++) direction[i] = -gradient[i]!;
    } else {
      const y = new Float64Array(x.length);
      const s = new Float64Array(x.length);
      for (let i = 0; i < x.length; i++) {
        y[i] = gradient[i]! - previousGradient[i]!;
        s[i] = direction[i]! * stepLength;
      }
      const ys = dot(y, s);
      if (ys > 1e-10) {
        if (steps.length === options.historySize) {
          steps.shift();
          gradientChanges.shift();
          inverseCurvatures.shift();
        }
        gradientChanges.push(y);
        steps.push(s);
        inverseCurvatures.push(1 / ys);
        hessianScale = ys / dot(y, y);
      }
      // Two-loop recursion: direction = −H·g.
      const q = new Float64Array(x.length);
      for (let i = 0; i < x.length; i++) q[i] = -gradient[i]!;
      for (let k = steps.length - 1; k >= 0; k--) {
        alphas[k] = dot(steps[k]!, q) * inverseCurvatures[k]!;
        const yk = gradientChanges[k]!;
        for (let i = 0; i < x.length; i++) q[i]! -= alphas[k]! * yk[i]!;
      }
      for (let i = 0; i < x.length; i++) q[i]! *= hessianScale;
      for (let k = 0; k < steps.length; k++) {
        const beta = dot(gradientChanges[k]!, q) * inverseCurvatures[k]!;
        const sk = steps[k]!;
        for (let i = 0; i < x.length; i++) q[i]! += (alphas[k]! - beta) * sk[i]!;
      }
      direction = q;
    }
    previousGradient = Float64Array.from(gradient);
    const previousValue = value;

    let l1 = 0;
    for (let i = 0; i < x.length; i++) l1 += Math.abs(gradient[i]!);
    const initialStep = iterations === 1 ? Math.min(1, 1 / l1) * options.lr : options.lr;
    const slope = dot(gradient, direction);
    if (slope > -TOLERANCE_CHANGE) break;

    const search = await strongWolfe(objective, x, initialStep, direction, { t: 0, value, gradient, slope });
    stepLength = search.point.t;
    value = search.point.value;
    gradient = search.point.gradient;
    for (let i = 0; i < x.length; i++) x[i]! += stepLength * direction[i]!;
    evaluations += search.evaluations;

    if (iterations === options.maxIterations || evaluations >= maxEvaluations) break;
    if (maxAbs(gradient) <= TOLERANCE_GRAD) break;
    let largestStep = 0;
    for (let i = 0; i < x.length; i++) largestStep = Math.max(largestStep, Math.abs(direction[i]! * stepLength));
    if (largestStep <= TOLERANCE_CHANGE) break;
    if (Math.abs(value - previousValue) < TOLERANCE_CHANGE) break;
  }
  return { x, value, evaluations, iterations };
}
