"""communitybots: public-input elicitation with a team of topic-expert chatbots.

The conversational core: a survey specification (:mod:`communitybots.spec`), offline
language understanding (:mod:`communitybots.nlu`) and the Conversation and Topic
Management engine (:mod:`communitybots.ctm`), after Jiang et al., "CommunityBots:
Creating and Evaluating A Multi-Agent Chatbot Platform for Public Input Elicitation"
(CSCW 2023).
"""

__version__ = "0.1.0"
