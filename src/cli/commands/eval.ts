import type { CommandModule } from 'yargs';
import { UserError } from '../../errors.js';

export const evalCommand: CommandModule = {
  command: 'eval',
  describe: 'Perplexity of a model on WikiText-2, PTB, C4 or your own text',
  handler: () => {
    throw new UserError('`eval` is not yet available in this build', 3);
  },
};
