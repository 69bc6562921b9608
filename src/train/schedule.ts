export type SchedulerType = 'cosine' | 'linear' | 'constant' | 'constant_with_warmup';

export const SCHEDULER_TYPES: readonly SchedulerType[] = ['cosine', 'linear', 'constant', 'constant_with_warmup'];

/**
 * The learning rate for optimizer step `step` (0-based) as transformers' schedulers give it:
 * a linear warm-up from 0 over `warmupSteps`, then cosine or linear decay to 0, or constant.
 */
export function learningRateAt(type: SchedulerType, base: number, step: number, totalSteps: number, warmupSteps: number): number {
  if (type === 'constant') return base;
  if (step < warmupSteps) return (base * step) / Math.max(1, warmupSteps);
  if (type === 'constant_with_warmup') return base;
  const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
  if (type === 'linear') return base * Math.max(0, 1 - progress);
  return base * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}
