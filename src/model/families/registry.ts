// The supported decoder families. Adding one = writing its table and listing it here.
import { llamaFamily } from './llama.js';
import { optFamily } from './opt.js';
import type { FamilySpec } from './types.js';

export const FAMILIES: readonly FamilySpec[] = [optFamily, llamaFamily];

export function familyForModelType(modelType: string): FamilySpec | undefined {
  const t = modelType.toLowerCase();
  return FAMILIES.find((f) => f.modelTypes.includes(t));
}

export type { Architecture, FamilySpec, FfnKind, FfnRoles, ModelConfig } from './types.js';
