"""``splitmq demo``: a broker, a coordinator and three agents on this machine, end to end."""
