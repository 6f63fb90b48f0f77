"""Channel adapters: one module and one class per channel, the contract in `channels.base`."""
