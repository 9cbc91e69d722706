// The hub settings huggingface_hub and transformers read from the environment, read the same way here:
// HF_ENDPOINT, HF_TOKEN (else the token file `hf auth login` writes), HF_HUB_OFFLINE. The cache folder is
// @huggingface/hub's getHFHubCachePath(): $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { getHFHubCachePath } from '@huggingface/hub';
import { UserError } from '../errors.js';

export interface HubSettings {
  /** Hub base URL without a trailing slash. */
  endpoint: string;
  token?: string;
  offline: boolean;
  cacheDir: string;
}

const TRUE = /^(1|true|yes|on)$/i;

function hfHome(): string {
  return process.env.HF_HOME ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
}

function readToken(): string | undefined {
  const env = process.env.HF_TOKEN ?? process.env.HUGGING_FACE_HUB_TOKEN;
  if (env !== undefined) return env.trim() || undefined;
  const file = process.env.HF_TOKEN_PATH ?? join(hfHome(), 'token');
  return existsSync(file) ? readFileSync(file, 'utf8').trim() || undefined : undefined;
}

/** @huggingface/hub refuses other tokens with a TypeError: say it in the CLI's words before a request. */
export function checkToken(token: string | undefined): void {
  if (token !== undefined && !token.startsWith('hf_')) throw new UserError('HF_TOKEN is not a Hugging Face access token (they start with hf_): create one at https://huggingface.co/settings/tokens');
}

export function hubSettings(): HubSettings {
  const token = readToken();
  return {
    endpoint: (process.env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, ''),
    token,
    offline: TRUE.test(process.env.HF_HUB_OFFLINE ?? ''),
    cacheDir: getHFHubCachePath(),
  };
}
